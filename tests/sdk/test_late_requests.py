"""SPEC §5.1-5.2 in the Python SDK: short attempts send no heartbeat, and a late request (one a paused handler
finds in its socket on resume, long after it was sent) runs only once a heartbeat of it is acknowledged."""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import jetbridge
import msgspec
import pytest
from jetbridge import _protocol as proto
from jetbridge._timeutil import NS, format_ms, now_ns
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.harness import running_service

pytestmark = pytest.mark.anyio


def request(task_type: str, *, sent_ago: float, interval_ms: int = 200) -> proto.TaskRequest:
    token = secrets.token_urlsafe(12)
    sent = now_ns() - int(sent_ago * NS)
    budget_ms = 60_000
    return proto.TaskRequest(
        type=proto.REQUEST_TYPE, protocol=1, task_id=f"late-{token[:6]}", task_type=task_type, queue="Q", attempt=1,
        max_attempts=0, created=format_ms(sent), deadline=None, attempt_token=token,
        attempt_deadline=format_ms(sent + budget_ms * 1_000_000), budget_ms=budget_ms,
        heartbeat_subject=f"test.hb.{token}", heartbeat_interval_ms=interval_ms, cancel_subject=f"test.cancel.{token}",
        payload_encoding="json", content_type="application/json", payload=msgspec.Raw(b"null"), heartbeat_ack=True)


async def ask(nc: Client, subject: str, req: proto.TaskRequest) -> dict[str, Any]:
    reply = await nc.request(subject, proto.encode_request(req), headers=proto.request_headers(req), timeout=10)
    return msgspec.json.decode(reply.data)  # type: ignore[no-any-return]


async def test_late_request_without_its_dispatcher_never_runs(nc: Client, unique: str) -> None:
    ran: list[int] = []

    async def work(task: jetbridge.Task) -> Any:
        ran.append(task.attempt)
        return "ran"

    async with running_service(nc, f"svc-{unique}", f"jb.{unique}", {"work": work}):
        body = await ask(nc, f"jb.{unique}.work", request("work", sent_ago=30))  # nobody acks its heartbeat
    assert ran == []
    assert (body["status"], body["error"]["code"]) == ("retry", "cancelled")


async def test_late_request_whose_heartbeat_is_acked_runs(nc: Client, unique: str) -> None:
    async def work(task: jetbridge.Task) -> Any:
        return "ran"

    req = request("work", sent_ago=30)

    async def ack(msg: Msg) -> None:
        await msg.respond(b"")

    sub = await nc.subscribe(req.heartbeat_subject, cb=ack)
    async with running_service(nc, f"svc-{unique}", f"jb.{unique}", {"work": work}):
        body = await ask(nc, f"jb.{unique}.work", req)
    await sub.unsubscribe()
    assert (body["status"], body["result"]) == ("ok", "ran")


async def test_a_short_fresh_attempt_sends_no_heartbeat(nc: Client, unique: str) -> None:
    async def work(task: jetbridge.Task) -> Any:
        return "quick"

    req = request("work", sent_ago=0, interval_ms=10_000)
    beats: list[bytes] = []

    async def record(msg: Msg) -> None:
        beats.append(msg.data)
        await msg.respond(b"")

    sub = await nc.subscribe(req.heartbeat_subject, cb=record)
    async with running_service(nc, f"svc-{unique}", f"jb.{unique}", {"work": work}):
        body = await ask(nc, f"jb.{unique}.work", req)
        await nc.flush()
    await sub.unsubscribe()
    assert body["status"] == "ok" and beats == []


async def test_a_slow_attempt_heartbeats_within_250_ms(nc: Client, unique: str) -> None:
    first = anyio.Event()

    async def work(task: jetbridge.Task) -> Any:
        with anyio.fail_after(5):
            await first.wait()
        return "slow"

    req = request("work", sent_ago=0, interval_ms=10_000)

    async def record(msg: Msg) -> None:
        first.set()
        await msg.respond(b"")

    sub = await nc.subscribe(req.heartbeat_subject, cb=record)
    async with running_service(nc, f"svc-{unique}", f"jb.{unique}", {"work": work}):
        body = await ask(nc, f"jb.{unique}.work", req)
    await sub.unsubscribe()
    assert (body["status"], body["result"]) == ("ok", "slow")
