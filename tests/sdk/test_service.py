"""The Python handler service at the protocol level: bad requests get the defined replies and never take it
down; oversize results, blocking handlers, micro discovery and drain."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import jetbridge
import nats.errors
import pytest
from jetbridge import _protocol as proto
from nats.aio.client import Client

from tests.harness import Harness

pytestmark = pytest.mark.anyio
TOKEN = "a1B2c3D4e5F6g7H8"


def request_body(task_type: str = "echo", **overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "io.jetbridge.v1.task_request", "protocol": 1, "task_id": "t1", "task_type": task_type,
        "queue": "Q", "attempt": 1, "max_attempts": 3, "created": "2026-11-24T10:00:00.000Z", "deadline": None,
        "attempt_token": TOKEN, "attempt_deadline": "2026-11-24T10:01:00.000Z", "budget_ms": 5000,
        "heartbeat_subject": f"hb.{TOKEN}", "heartbeat_interval_ms": 0, "cancel_subject": f"cancel.{TOKEN}",
        "payload_encoding": "json", "content_type": "application/json", "payload": {"x": 1}}
    body.update(overrides)
    return json.dumps(body).encode()


async def echo(task: jetbridge.Task) -> Any:
    return task.payload


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"{nope", "terminate", "bad_request"),
    (b"[]", "terminate", "bad_request"),
    (b"", "terminate", "bad_request"),
    (request_body(protocol=7), "retry", "unsupported_protocol"),
    (request_body(attempt="one"), "terminate", "bad_request"),
    (request_body(task_id="a.b"), "terminate", "bad_request"),
    (request_body(payload_encoding="base64", payload="***"), "terminate", "bad_request"),
    (request_body(heartbeat_subject="a.*"), "terminate", "bad_request"),
])
async def test_bad_requests_get_the_defined_reply_and_the_service_keeps_serving(
        nc: Client, unique: str, data: bytes, status: str, code: str) -> None:
    h = Harness(nc, unique)
    async with h.service({"echo": echo}):
        reply = await nc.request(f"{h.prefix}.echo", data, timeout=5)
        outcome = proto.interpret_reply(reply.headers, reply.data)
        assert (outcome.kind, outcome.error_code) == (status, code)
        ok = await nc.request(f"{h.prefix}.echo", request_body(), timeout=5)
        assert proto.interpret_reply(ok.headers, ok.data).result == {"x": 1}


async def test_oversize_result_becomes_result_too_large(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)

    async def huge(task: jetbridge.Task) -> Any:
        return "x" * nc.max_payload

    async with h.service({"huge": huge}):
        reply = await nc.request(f"{h.prefix}.huge", request_body("huge"), timeout=5)
    outcome = proto.interpret_reply(reply.headers, reply.data)
    assert (outcome.kind, outcome.error_code) == ("terminate", "result_too_large")


async def test_blocking_handlers_run_in_threads_concurrently(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)

    def blocking(task: jetbridge.Task) -> Any:
        time.sleep(0.3)
        return task.attempt

    async with h.service({"blocking": blocking}, concurrency=8):
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(nc.request, f"{h.prefix}.blocking", request_body("blocking"), 5)
        assert time.monotonic() - started < 0.3 * 4


async def test_micro_discovery_shows_protocols_and_task_types(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    async with h.service({"echo": echo, "email:new": echo}):
        info = json.loads((await nc.request(f"$SRV.INFO.svc-{h.unique}", b"", timeout=2)).data)
    assert info["metadata"]["jetbridge.protocols"] == "1,1.1"
    assert {e["name"] for e in info["endpoints"]} == {"echo", "email_new"}  # SPEC §2 endpoint names
    assert info["metadata"]["jetbridge.sdk"].startswith("python/")
    assert {e["metadata"]["jetbridge.task_type"] for e in info["endpoints"]} == {"echo", "email:new"}
    assert {e["queue_group"] for e in info["endpoints"]} == {"jetbridge"}


async def test_drain_finishes_running_attempts_and_takes_no_new_ones(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    running, release = anyio.Event(), anyio.Event()

    async def slow(task: jetbridge.Task) -> Any:
        running.set()
        await release.wait()
        return "finished"

    service = jetbridge.Service(nc, f"svc-{unique}", prefix=h.prefix)
    service.add_handler("slow", slow)
    replies: list[Any] = []
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)

        async def ask() -> None:
            replies.append(await nc.request(f"{h.prefix}.slow", request_body("slow"), timeout=10))

        tg.start_soon(ask)
        with anyio.fail_after(5):
            await running.wait()
        service.stop()
        with anyio.fail_after(5):
            await service.unsubscribed.wait()
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(f"{h.prefix}.slow", request_body("slow"), timeout=2)
        release.set()
    assert proto.interpret_reply(replies[0].headers, replies[0].data).result == "finished"


def test_public_api_is_exported_from_the_package() -> None:
    for name in jetbridge.__all__:
        obj = getattr(jetbridge, name)
        if name in ("Middleware", "Next"):  # type aliases of collections.abc.Callable (their module is fixed)
            continue
        assert getattr(obj, "__module__", "jetbridge") in ("jetbridge", "builtins") or not hasattr(obj, "__module__")
    svc = jetbridge.Service(None, "x")  # type: ignore[arg-type]
    with pytest.raises(jetbridge.ConfigError, match="task type 'bad type' is invalid"):
        svc.add_handler("bad type", echo)
