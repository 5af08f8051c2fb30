"""Shared fixtures: a real nats-server with JetStream on a free loopback port, and connected clients."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.logs import configure_logging

configure_logging("console", "info")

_names = itertools.count(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A private server for tests that stop, restart or reconfigure it."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
def unique() -> str:
    """A name no other test uses (queues, task types) on the shared server."""
    return f"t{next(_names)}"


@pytest.fixture
async def h(nc: Client, unique: str) -> AsyncIterator[Any]:
    """A :class:`tests.harness.Harness` with its queue made (default settings for tests)."""
    from tests.harness import Harness

    harness = Harness(nc, unique)
    await harness.make_queue()
    yield harness
