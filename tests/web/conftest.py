"""A real ``jetbridge serve`` app (uvicorn in a thread, its own NATS connection) on the session's nats-server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
import uvicorn

from bridge.embedded import NatsServer
from bridge.web.app import create_app
from bridge.web.auth import Tokens, parse_tokens
from bridge.web.backend import Backend

TOKENS = {"read": "read-token-0123456789", "producer": "producer-token-0123456789",
          "operator": "operator-token-0123456789"}


@dataclass
class Served:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_app(nats_url: str, *, tokens: Tokens | None = None, queue: str = "DEFAULT", **options: Any) -> Served:
    """Start the app on a socket bound here (so requests wait in its backlog until uvicorn accepts)."""
    ready = threading.Event()

    async def make_backend() -> Backend:
        nc = await nats.connect(nats_url)
        backend = Backend(nc, queue=queue)
        await backend.start(share_index=False)
        await backend.wait_ready()
        ready.set()
        return backend

    app = create_app(make_backend, tokens=tokens, **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert ready.wait(60), "the app did not start"
    return Served(f"http://127.0.0.1:{port}", server, thread)


@pytest.fixture(scope="session")
def web(nats_server: NatsServer) -> Iterator[Served]:
    """The app with authentication off (loopback)."""
    served = serve_app(nats_server.url)
    yield served
    served.stop()


@pytest.fixture(scope="session")
def web_auth(nats_server: NatsServer) -> Iterator[Served]:
    """The app with the three roles' tokens configured."""
    text = ",".join(f"{role}:{token}" for role, token in TOKENS.items())
    served = serve_app(nats_server.url, tokens=parse_tokens(text, source="test"))
    yield served
    served.stop()


@pytest.fixture
def bearer() -> Callable[[str], dict[str, str]]:
    return lambda role: {"Authorization": f"Bearer {TOKENS[role]}"}
