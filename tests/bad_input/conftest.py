"""Fixtures for the bad-input catalogue: a queue with a dispatcher and a well-behaved handler running, so each case
can show that a normal task alongside the bad input still completes; rogue handlers that answer on the real
subjects with whatever a case needs; and the dispatcher's log lines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import jetbridge
import pytest
import structlog
from jetbridge import _protocol as proto
from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge.dispatcher import Dispatcher
from tests.harness import Harness

Rogue = Callable[[Msg, proto.TaskRequest], Awaitable[None]]


@pytest.fixture
async def h(nc: Client, unique: str) -> Harness:
    harness = Harness(nc, unique)
    await harness.make_queue(lease=1.0, max_run_time=10.0)
    return harness


async def echo(task: jetbridge.Task) -> Any:
    return {"echo": task.payload}


@asynccontextmanager
async def running(h: Harness, **overrides: Any) -> AsyncIterator[Dispatcher]:
    """A dispatcher on ``h``'s queue and a Python handler for the type ``ok``."""
    async with h.dispatcher(**overrides) as d, h.service({"ok": echo}):
        yield d


async def assert_unaffected(h: Harness, n: int = 3) -> None:
    """Normal tasks enqueued alongside the bad input complete, once each, with their results."""
    ids = [await h.producer.enqueue("ok", {"n": i}) for i in range(n)]
    for i, task_id in enumerate(ids):
        record = await h.producer.wait(task_id, timeout=20)
        assert (record.state, record.tries) == ("complete", 1), record
        assert record.result is not None and record.result.value() == {"echo": {"n": i}}


@asynccontextmanager
async def rogue(h: Harness, task_type: str, behave: Rogue) -> AsyncIterator[None]:
    """A handler for ``task_type`` that does whatever ``behave(msg, request)`` does with each request."""

    async def on_request(msg: Msg) -> None:
        request = proto.decode_request(msg.data)
        await behave(msg, request)

    sub = await h.nc.subscribe(f"{h.prefix}.{task_type}", queue="jetbridge", cb=on_request)
    try:
        yield
    finally:
        await sub.unsubscribe()


def reply_body(request: proto.TaskRequest | None = None, **fields: Any) -> bytes:
    import msgspec

    body: dict[str, Any] = {"type": proto.REPLY_TYPE, "protocol": 1, "status": "ok", "result_encoding": "json",
                            "result": "fine"}
    if request is not None:
        body["attempt_token"] = request.attempt_token
    body.update(fields)
    return msgspec.json.encode({k: v for k, v in body.items() if v is not ...})


@pytest.fixture
def logs() -> Any:
    """The structured log entries emitted during the test (``[{"event": ..., ...}, ...]``)."""
    with structlog.testing.capture_logs() as entries:
        yield entries


def logged(entries: list[dict[str, Any]], event: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("event") == event and all(e.get(k) == v for k, v in match.items())]


async def eventually(check: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    """Wait (bounded) for a counter or log condition that no event announces."""
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110 - a counter or log line: nothing announces it
            await anyio.sleep(0.02)


def metric(counter: Any, **labels: str) -> float:
    return float(counter.labels(**labels)._value.get())
