"""Bad heartbeats and cancels on the real subjects: the dispatcher's heartbeat subject, the control cancel subject
and an attempt's cancel subject. Invalid ones are counted and logged with the attempt they were aimed at; forged
ones never keep an attempt alive; nothing else is affected."""

from __future__ import annotations

from typing import Any

import anyio
import jetbridge
import msgspec
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


async def test_heartbeat_for_an_attempt_that_does_not_exist(h: Harness, logs: Any) -> None:
    async with running(h) as d:
        token = "Nn" * 8
        await h.nc.publish(f"{names.HEARTBEAT_SUBJECT_PREFIX}.{d.id}.{token}", beat("ghost", token))
        await eventually(lambda: metric(d.metrics.stale_messages, kind="heartbeat") >= 1)
        await assert_unaffected(h)
    [entry] = logged(logs, "stale_heartbeat")
    assert (entry["task_id"], entry["token"], entry["why"]) == ("ghost", token, "attempt is not running")


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
