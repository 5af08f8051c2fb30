"""Bad heartbeats and cancels on the real subjects: the dispatcher's heartbeat subject, the control cancel subject
and an attempt's cancel subject. Invalid ones are counted and logged with the attempt they were aimed at; forged
ones never keep an attempt alive; nothing else is affected."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import jetbridge
import msgspec
import nats.errors
import pytest
from jetbridge import _names as names
from jetbridge import _protocol as proto
from nats.aio.msg import Msg

from tests.bad_input.conftest import assert_unaffected, eventually, logged, metric, reply_body, rogue, running
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def beat(task_id: str, token: str, **fields: Any) -> bytes:
    body = {"type": proto.HEARTBEAT_TYPE, "protocol": 1, "task_id": task_id, "attempt_token": token, **fields}
    return msgspec.json.encode(body)


@pytest.mark.parametrize("make", [
    pytest.param(lambda r: b"\x00garbage\xff", id="garbage-bytes"),
    pytest.param(lambda r: b'{"type":"io.jetbridge.v1.heartbeat"}', id="missing-fields"),
    pytest.param(lambda r: beat(r.task_id, r.attempt_token, progress=1.5), id="progress-out-of-range"),
    pytest.param(lambda r: beat(r.task_id, r.attempt_token, protocol=2), id="unknown-protocol-version"),
    pytest.param(lambda r: beat(r.task_id, r.attempt_token, message="m" * 2000), id="message-too-long"),
    pytest.param(lambda r: beat(r.task_id, r.attempt_token, attempt_token="bad token!"), id="malformed-token"),
    pytest.param(lambda r: b'{"x":' + b"[" * 3000 + b"]" * 3000 + b"}", id="deeply-nested"),
])
async def test_invalid_heartbeat_is_counted_and_named_and_the_attempt_goes_on(h: Harness, logs: Any, make: Any) -> None:
    async def noisy(msg: Msg, request: proto.TaskRequest) -> None:
        await h.nc.publish(request.heartbeat_subject, make(request))
        await h.nc.publish(request.heartbeat_subject, proto.encode_heartbeat(request.task_id, request.attempt_token))
        await h.nc.flush()
        await h.nc.publish(msg.reply, reply_body(request, result="done"))

    async with running(h) as d, rogue(h, "noisy", noisy):
        record = await h.run("noisy")
        await eventually(lambda: metric(d.metrics.stale_messages, kind="invalid_heartbeat") >= 1)
        await assert_unaffected(h)
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 1, "done")
    [entry] = logged(logs, "invalid_heartbeat")
    assert entry["task_id"] == record.id and "invalid heartbeat" in entry["error"]


@pytest.mark.parametrize("forge", [
    pytest.param(lambda r: beat(r.task_id, "Zz" * 8), id="wrong-token-in-body"),
    pytest.param(lambda r: beat("some-other-task", r.attempt_token), id="wrong-task-id"),
])
async def test_forged_heartbeats_do_not_keep_an_attempt_alive(h: Harness, logs: Any, forge: Any) -> None:
    """A handler that never answers and only sends heartbeats that do not match its attempt is declared lost
    after the lease, exactly as if it sent nothing."""

    async def forger(msg: Msg, request: proto.TaskRequest) -> None:
        async def loop() -> None:
            for _ in range(40):
                await h.nc.publish(request.heartbeat_subject, forge(request))
                await anyio.sleep(0.1)
        tg.start_soon(loop)

    async with anyio.create_task_group() as tg:
        async with running(h) as d, rogue(h, "forger", forger):
            record = await h.run("forger", max_tries=1)
            stale = metric(d.metrics.stale_messages, kind="heartbeat")
            await assert_unaffected(h)
        tg.cancel_scope.cancel()
    assert (record.state, record.last_err_code) == ("expired", "handler_lost")
    assert "no heartbeat for" in record.last_err
    assert stale >= 5
    assert logged(logs, "stale_heartbeat", why="token or task id does not match")


async def test_heartbeats_for_attempts_that_do_not_exist_never_reach_the_dispatcher(h: Harness, logs: Any) -> None:
    """Each attempt subscribes to its own heartbeat subject, so the server drops heartbeats for any other token:
    they cost the dispatcher nothing, and a sender asking for an ack hears "no responders" at once."""
    async with running(h) as d:
        token = "Nn" * 8
        subject = f"{names.HEARTBEAT_SUBJECT_PREFIX}.{d.id}.{token}"
        await h.nc.publish(subject, beat("ghost", token))
        with pytest.raises(nats.errors.NoRespondersError):
            await h.nc.request(subject, beat("ghost", token), timeout=5)
        await assert_unaffected(h)
        assert metric(d.metrics.stale_messages, kind="heartbeat") == 0
    assert not logged(logs, "stale_heartbeat") and not logged(logs, "invalid_heartbeat")


FLOODER = """
import asyncio, secrets, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    prefix, n = sys.argv[2], int(sys.argv[3])
    body = b'{"type":"io.jetbridge.v1.heartbeat","protocol":1,"task_id":"x","attempt_token":"AAAAAAAAAAAAAAAA"}'
    for i in range(n):
        await nc.publish(f"{prefix}.{secrets.token_urlsafe(12)}", body)
        if i % 5000 == 0:
            await nc.flush()
    await nc.flush()
    await nc.close()
asyncio.run(main())
"""


async def test_a_heartbeat_flood_costs_a_live_attempt_nothing(h: Harness, logs: Any, nats_server: Any) -> None:
    """A client with handler rights floods the dispatcher's heartbeat subjects with forged heartbeats for random
    tokens while a real attempt runs with a short lease: the attempt keeps its lease and completes once, the
    dispatcher keeps its connection, and nothing is logged per forged message."""
    flood_done = anyio.Event()
    started = anyio.Event()

    async def long(task: jetbridge.Task) -> Any:
        started.set()
        await flood_done.wait()
        return "survived"

    async with running(h) as d, h.service({"long": long}):
        task_id = await h.producer.enqueue("long", max_tries=1)
        with anyio.fail_after(20):
            await started.wait()
        prefix = f"{names.HEARTBEAT_SUBJECT_PREFIX}.{d.id}"
        flooder = await anyio.run_process([sys.executable, "-c", FLOODER, nats_server.url, prefix, "200000"], check=True)
        assert flooder.returncode == 0
        flood_done.set()
        record = await h.producer.wait(task_id, timeout=30)
        assert h.nc.is_connected
        await assert_unaffected(h)
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 1, "survived")
    assert len(logged(logs, "stale_heartbeat")) + len(logged(logs, "invalid_heartbeat")) <= 2


@pytest.mark.parametrize("body", [
    pytest.param(b"cancel everything", id="not-json"),
    pytest.param(b'{"reason": "no task named"}', id="no-task-id"),
    pytest.param(b'["task", "x"]', id="not-an-object"),
    pytest.param(b'{"task_id": ' + b"[" * 3000 + b"]" * 3000 + b"}", id="deeply-nested"),
])
async def test_malformed_control_cancel_is_logged_and_cancels_nothing(h: Harness, logs: Any, body: bytes) -> None:
    started = anyio.Event()

    async def slow(task: jetbridge.Task) -> Any:
        started.set()
        await anyio.sleep(0.5)
        return "not cancelled"

    async with running(h), h.service({"slow": slow}):
        task_id = await h.producer.enqueue("slow")
        with anyio.fail_after(10):
            await started.wait()
        await h.nc.publish(names.CONTROL_CANCEL_SUBJECT, body)
        record = await h.producer.wait(task_id, timeout=10)
        await assert_unaffected(h)
    assert (record.state, record.result and record.result.value()) == ("complete", "not cancelled")
    assert logged(logs, "bad_cancel_request")


async def test_control_cancel_for_an_unknown_task_is_harmless(h: Harness) -> None:
    async with running(h):
        await h.nc.publish(names.CONTROL_CANCEL_SUBJECT, b'{"task_id": "no-such-task", "reason": "x"}')
        await assert_unaffected(h)


async def test_cancel_in_an_unknown_protocol_version_is_ignored_by_the_handler(h: Harness) -> None:
    """A cancel the handler cannot read (protocol 2, or garbage) on an attempt's cancel subject does not stop it."""
    started = anyio.Event()
    tokens: list[str] = []

    async def slow(task: jetbridge.Task) -> Any:
        tokens.append(task.token)
        started.set()
        await anyio.sleep(0.5)
        return task.cancel_reason or "ran to the end"

    async with running(h), h.service({"slow": slow}):
        task_id = await h.producer.enqueue("slow")
        with anyio.fail_after(10):
            await started.wait()
        subject = f"{names.CANCEL_SUBJECT_PREFIX}.{tokens[0]}"
        cancel = msgspec.json.decode(proto.encode_cancel(task_id, tokens[0], "operator"))
        await h.nc.publish(subject, msgspec.json.encode({**cancel, "protocol": 2}))
        await h.nc.publish(subject, b"stop!")
        record = await h.producer.wait(task_id, timeout=10)
        await assert_unaffected(h)
    assert (record.state, record.result and record.result.value()) == ("complete", "ran to the end")
