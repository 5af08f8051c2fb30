"""Issue 13, items 5, 7, 11, 13-15: nothing loops hot, waits without a word, or runs with limits nobody sees."""

from __future__ import annotations

import os
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge import _names as names
from jetbridge import _protocol as proto
from jetbridge._requester import Requester
from jetbridge._store import js_api
from jetbridge._task import TaskRecord
from nats.aio.msg import Msg

from bridge.attempts import new_token
from bridge.states import Limits, on_delivery
from tests.bad_input.conftest import eventually, logged, metric, reply_body, rogue
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def test_a_huge_retry_after_never_becomes_a_hot_loop(h: Harness) -> None:
    """retry_after_ms 1e15 once made the schedule fail and the fallback redelivery come back at once, about 200
    attempts a second. The task must wait (at most a week), and the dispatcher must go on with other work."""
    calls: list[int] = []

    async def far_future(msg: Msg, request: proto.TaskRequest) -> None:
        calls.append(request.attempt)
        body = reply_body(request, status="retry", result=..., result_encoding=...,
                          error={"code": "later", "message": "come back in 31 million years"},
                          retry_after_ms=10**15)
        await h.nc.publish(msg.reply, body)

    async def ok(task: jetbridge.Task) -> Any:
        return "ok"

    async with h.dispatcher(), rogue(h, "far", far_future), h.service({"ok": ok}), h.events() as events:
        task_id = await h.producer.enqueue("far", max_tries=0)  # no limit: only the delay stops a loop
        with anyio.fail_after(20):
            async for event in events:
                if event.task_id == task_id and event.state == "retry":
                    break
        for _ in range(3):  # later work still flows, and the far retry has not come back meanwhile
            assert (await h.run("ok")).state == "complete"
        record = await h.producer.get(task_id)
    assert calls == [1]
    assert (record.state, record.tries) == ("retry", 1)


def test_attempt_tokens_are_unguessable() -> None:
    """96 random bits each: no shared prefix, no counter, nothing derivable from the previous token."""
    tokens = [new_token() for _ in range(2000)]
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) == 16 for t in tokens)
    assert len(os.path.commonprefix(tokens[:2])) <= 3 and len(os.path.commonprefix(tokens)) == 0


async def test_the_request_names_the_try_limit_that_applies(h: Harness) -> None:
    await h.make_queue(max_tries=4)
    told: list[int] = []

    async def failing(msg: Msg, request: proto.TaskRequest) -> None:
        told.append(request.max_attempts)
        body = reply_body(request, status="retry", result=..., result_encoding=...,
                          error={"code": "nope", "message": "fails"})
        await h.nc.publish(msg.reply, body)

    async with h.dispatcher(), rogue(h, "fail", failing):
        record = await h.run("fail", max_tries=10)
    assert told == [4, 4, 4, 4]
    assert (record.state, record.tries) == ("expired", 4)
    assert record.last_err == "gave up after 4 of 4 attempts: fails"


def test_running_out_of_attempts_again_does_not_stack_the_message() -> None:
    task = TaskRecord(id="t", type="x", queue="Q", payload=None, max_tries=2, state="retry", tries=2,
                      created="2026-01-01T00:00:00Z", last_err="gave up after 2 of 2 attempts: boom")
    decision = on_delivery(task, 0, Limits())
    assert decision.last_err == "gave up after 2 of 2 attempts: boom"


async def test_a_queue_created_after_start_is_served_within_seconds(h: Harness, logs: Any) -> None:
    later = Harness(h.nc, f"{h.unique}late")

    async def ok(task: jetbridge.Task) -> Any:
        return task.queue

    async with h.dispatcher(queues=("*",), queue_refresh_interval=0.2, subject_prefix=later.prefix), \
            later.service({"ok": ok}):
        await later.make_queue()
        record = await later.run("ok")
    assert (record.state, record.result and record.result.value()) == ("complete", later.queue)
    assert logged(logs, "queue_added", queue=later.queue)


async def test_changed_queue_settings_apply_without_a_restart(h: Harness, logs: Any) -> None:
    async def fails(task: jetbridge.Task) -> Any:
        raise jetbridge.Retry("fails")

    async with h.dispatcher(queue_refresh_interval=0.2) as d, h.service({"fail": fails}):
        await h.admin.update(h.queue, max_tries=1)
        await eventually(lambda: d.workers[h.queue].config.max_tries == 1)
        record = await h.run("fail")
    assert (record.state, record.tries) == ("expired", 1)
    assert logged(logs, "queue_changed", queue=h.queue, max_tries="-1 -> 1")


async def test_stripped_jetbridge_settings_are_detected(h: Harness, logs: Any) -> None:
    """asyncjobs' ``ajc queue configure`` rewrites the consumer without Jetbridge's metadata."""
    rq = Requester(h.nc)
    stream = names.queue_stream(h.queue)
    async with h.dispatcher(queue_refresh_interval=0.2) as d:
        info = await js_api(rq, f"CONSUMER.INFO.{stream}.{names.QUEUE_CONSUMER}")
        config = {k: v for k, v in info["config"].items() if k != "metadata"}
        await js_api(rq, f"CONSUMER.CREATE.{stream}.{names.QUEUE_CONSUMER}", {"stream_name": stream, "config": config})
        await eventually(lambda: d.workers[h.queue].config.asyncjobs_native)
    assert logged(logs, "queue_settings_stripped", queue=h.queue)


async def test_waiting_for_a_handler_costs_no_writes_and_no_phantom_attempts(h: Harness) -> None:
    """No handler for the type: one phantom attempt finds that out; after that the task is probed with a
    growing delay, with no saves and no events, until a handler comes; then it runs as attempt 1."""
    seen: list[tuple[str, int]] = []

    async def ok(task: jetbridge.Task) -> Any:
        return task.attempt

    async with h.dispatcher(no_handler_delay=0.05) as d, h.events() as events:
        task_id = await h.producer.enqueue("late")

        async def collect() -> None:
            async for event in events:
                if event.task_id == task_id:
                    seen.append((event.state, event.tries))

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            await eventually(lambda: metric(d.metrics.handler_probes, found="no") >= 4)
            assert seen == [("new", 0), ("active", 1), ("no_handler", 0)]
            async with h.service({"late": ok}):
                record = await h.producer.wait(task_id, timeout=30)
            tg.cancel_scope.cancel()
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 1, 1)
    assert seen[3:] == [("active", 1), ("complete", 1)] and len(seen) == 5


def test_task_get_shows_the_try_limit_that_applies() -> None:
    from bridge.output import try_limit

    task = TaskRecord(id="t", type="x", queue="Q", payload=None, max_tries=10, state="retry", tries=2,
                      created="2026-01-01T00:00:00Z")
    assert (try_limit(task, 4), try_limit(task, -1), try_limit(task, 20)) == ("4", "10", "10")
    assert try_limit(TaskRecord(id="t", type="x", queue="Q", payload=None, max_tries=0, state="new", tries=0,
                                created="2026-01-01T00:00:00Z")) == "unlimited"
