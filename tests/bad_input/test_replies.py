"""Handlers that misbehave on the real subjects: garbage replies, replies for another attempt, two replies, no
reply at all, a protocol the dispatcher does not speak. Each costs the task an attempt with a message that says
what was wrong, and nothing else is affected."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from jetbridge import _names as names
from jetbridge import _protocol as proto
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.bad_input.conftest import assert_unaffected, eventually, metric, reply_body, rogue, running
from tests.harness import Harness

pytestmark = pytest.mark.anyio

DEEP = b"[" * 3000 + b"]" * 3000


@pytest.mark.parametrize(("body", "message"), [
    pytest.param(b"<html>502 Bad Gateway</html>", "protocol error: reply is not JSON", id="not-json"),
    pytest.param(b'{"hello": "world"}', "reply is not a valid io.jetbridge.v1.task_reply", id="json-not-a-reply"),
    pytest.param(reply_body(protocol=2), "protocol", id="unknown-protocol-version"),
    pytest.param(b"", "reply is empty and has no error headers", id="empty"),
    pytest.param(reply_body(status="retry"), "a retry reply needs an error object", id="retry-without-error"),
    pytest.param(reply_body(result_encoding="base64", result="***"), "result is not valid base64", id="bad-base64"),
    pytest.param(reply_body(status="terminate", error={"code": "x", "message": "y"}, retry_after_ms=5),
                 "a terminate reply cannot carry retry_after_ms", id="terminate-with-retry-after"),
    pytest.param(b'{"type":"io.jetbridge.v1.task_reply","protocol":1,"status":"ok","result":' + DEEP + b"}",
                 "nested too deeply", id="deeply-nested"),
])
async def test_malformed_reply_is_a_protocol_error_named_in_the_task(h: Harness, body: bytes, message: str) -> None:
    async def reply_garbage(msg: Msg, request: proto.TaskRequest) -> None:
        await h.nc.publish(msg.reply, body)

    async with running(h) as d, rogue(h, "garbage", reply_garbage):
        task_id = await h.producer.enqueue("garbage", max_tries=2)
        record = await h.producer.wait(task_id, timeout=20)
        await assert_unaffected(h)
        errors = metric(d.metrics.protocol_errors, queue=h.queue, type="garbage")
    assert (record.state, record.tries, record.last_err_code) == ("expired", 2, "protocol_error")
    assert record.last_err.startswith("gave up after 2 of 2 attempts: protocol error") and message in record.last_err
    assert errors == 2


async def test_reply_carrying_another_attempts_token(h: Harness) -> None:
    other = "Zz" * 8

    async def wrong_token(msg: Msg, request: proto.TaskRequest) -> None:
        await h.nc.publish(msg.reply, reply_body(attempt_token=other))

    async with running(h) as d, rogue(h, "liar", wrong_token):
        record = await h.run("liar", max_tries=1)
        stale = metric(d.metrics.stale_messages, kind="reply")
        await assert_unaffected(h)
    assert (record.state, record.last_err_code) == ("expired", "protocol_error")
    assert f"reply carried attempt token {other}, not this attempt's" in record.last_err
    assert stale >= 1


async def test_replies_swapped_between_two_running_attempts(h: Harness) -> None:
    """A handler that answers task A's request with task B's reply (and the other way round) on its first
    attempts: neither takes the other's result; both complete on a later attempt with their own."""
    pending: list[tuple[Msg, proto.TaskRequest]] = []

    async def swap(msg: Msg, request: proto.TaskRequest) -> None:
        if request.attempt > 1:
            await h.nc.publish(msg.reply, reply_body(request, result=request.task_id))
            return
        pending.append((msg, request))
        if len(pending) == 2:
            (ma, ra), (mb, rb) = pending
            await h.nc.publish(ma.reply, reply_body(rb, result=rb.task_id))
            await h.nc.publish(mb.reply, reply_body(ra, result=ra.task_id))

    async with running(h), rogue(h, "swap", swap):
        a = await h.producer.enqueue("swap")
        b = await h.producer.enqueue("swap")
        ra, rb = await h.producer.wait(a, timeout=20), await h.producer.wait(b, timeout=20)
        await assert_unaffected(h)
    for record, task_id in ((ra, a), (rb, b)):
        assert (record.state, record.tries) == ("complete", 2)
        assert record.result is not None and record.result.value() == task_id


async def test_handler_replying_twice_stores_the_first_reply_only(h: Harness) -> None:
    async def twice(msg: Msg, request: proto.TaskRequest) -> None:
        await h.nc.publish(msg.reply, reply_body(request, result="first"))
        await h.nc.publish(msg.reply, reply_body(request, result="second"))

    async with running(h) as d, rogue(h, "twice", twice):
        record = await h.run("twice")
        await eventually(lambda: metric(d.metrics.stale_messages, kind="reply") >= 1, what="stale second reply")
        await assert_unaffected(h)
        again = await h.producer.get(record.id)
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 1, "first")
    assert again.result is not None and again.result.value() == "first"


async def test_handler_that_heartbeats_but_never_replies_times_out(nc: Client, unique: str) -> None:
    """Alive (it heartbeats), but never answers: each attempt ends at max_run_time, the handler is told to stop
    (a cancel with reason timeout), and the task expires naming the timeout."""
    h = Harness(nc, unique)
    await h.make_queue(lease=0.5, max_run_time=1.0)
    cancels: list[str] = []

    async def hang(msg: Msg, request: proto.TaskRequest) -> None:
        async def on_cancel(c: Msg) -> None:
            cancels.append(proto.decode_cancel(c.data).reason)

        await h.nc.subscribe(request.cancel_subject, cb=on_cancel)

        async def beat() -> None:
            for _ in range(15):
                await h.nc.publish(request.heartbeat_subject, proto.encode_heartbeat(request.task_id,
                                                                                     request.attempt_token))
                await anyio.sleep(0.1)

        anyio_tg.start_soon(beat)

    async with anyio.create_task_group() as anyio_tg:
        async with running(h), rogue(h, "mute", hang):
            record = await h.run("mute", max_tries=2)
            await assert_unaffected(h)
        anyio_tg.cancel_scope.cancel()
    assert (record.state, record.tries, record.last_err_code) == ("expired", 2, "timeout")
    assert "attempt 2 timed out after 1.000s without a reply" in record.last_err
    assert cancels == ["timeout", "timeout"]


async def test_handler_speaking_only_an_unknown_protocol_version(h: Harness) -> None:
    """A handler that speaks protocol 2 only answers with a v2 body and micro error headers: the headers decide,
    the attempt is retried, and the task ends naming what the handler said."""

    async def v2_only(msg: Msg, request: proto.TaskRequest) -> None:
        body = msgspec.json.encode({"type": "io.jetbridge.v2.task_reply", "protocol": 2, "status": "error"})
        await h.nc.publish(msg.reply, body, headers={
            names.H_SERVICE_ERROR_CODE: "505",
            names.H_SERVICE_ERROR: "unsupported protocol version 1: this handler speaks protocol 2"})

    async with running(h), rogue(h, "future", v2_only):
        record = await h.run("future", max_tries=2)
        await assert_unaffected(h)
    assert (record.state, record.tries, record.last_err_code) == ("expired", 2, "505")
    assert "unsupported protocol version 1: this handler speaks protocol 2" in record.last_err


def _unused(_: Any) -> None:  # keep the imports explicit for readers of the module
    return None
