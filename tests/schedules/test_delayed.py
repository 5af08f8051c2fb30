"""Delayed tasks: stored at once as 'scheduled', holding no slot, cancellable and reschedulable, never early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jetbridge
import pytest
from jetbridge._task import TaskState
from jetbridge._timeutil import NS, now_ns, parse_ns

from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def _echo(task: jetbridge.Task) -> Any:
    return task.payload


async def test_waiting_tasks_hold_no_slot_with_max_concurrency_1(h: Harness) -> None:
    await h.make_queue(max_concurrent=1)
    async with h.dispatcher(concurrency=1), h.service({"echo": _echo}):
        delayed = [await h.producer.enqueue("echo", {"n": i}, delay=3.0) for i in range(5)]
        record = await h.producer.get(delayed[0])
        assert record.state == "scheduled" and record.due
        info = await h.admin.info(h.queue)
        assert (info.waiting, info.in_flight) == (0, 0)  # no work item, no slot
        now = await h.run("echo", {"now": True}, timeout=10)  # runs at once, past the five waiting ones
        assert now.task_state is TaskState.COMPLETE
        assert {(await h.producer.get(t)).state for t in delayed} == {"scheduled"}
        for task_id in delayed:
            done = await h.producer.wait(task_id, timeout=30)
            assert done.task_state is TaskState.COMPLETE
            assert done.tried is not None and parse_ns(done.tried) >= parse_ns(done.due)  # never early


async def test_at_a_time_and_cancel_before_due(h: Harness) -> None:
    async with h.dispatcher(), h.service({"echo": _echo}):
        due = datetime.now(UTC) + timedelta(seconds=2)
        kept = await h.producer.enqueue("echo", "kept", at=due)
        dropped = await h.producer.enqueue("echo", "dropped", at=due.isoformat())
        cancelled = await h.producer.cancel(dropped, reason="changed my mind")
        assert cancelled.task_state is TaskState.TERMINATED
        assert (await h.producer.wait(kept, timeout=30)).task_state is TaskState.COMPLETE
        record = await h.producer.get(dropped)
        assert record.task_state is TaskState.TERMINATED and record.tries == 0


async def test_reschedule_earlier_and_later(h: Harness) -> None:
    async with h.dispatcher(), h.service({"echo": _echo}):
        early = await h.producer.enqueue("echo", 1, delay=3600)
        late = await h.producer.enqueue("echo", 2, delay=1)
        await h.producer.reschedule(early, delay=1)
        moved = await h.producer.reschedule(late, delay=4)
        started = now_ns()
        assert (await h.producer.wait(early, timeout=30)).task_state is TaskState.COMPLETE
        done = await h.producer.wait(late, timeout=30)
        assert done.tried is not None and parse_ns(done.tried) >= parse_ns(moved.due) > started + 2 * NS
        with pytest.raises(jetbridge.ConflictError, match="not waiting"):
            await h.producer.reschedule(early, delay=5)


async def test_bad_delays_are_one_line_errors(h: Harness) -> None:
    with pytest.raises(jetbridge.ConfigError, match="not both"):
        await h.producer.enqueue("echo", delay=1, at=datetime.now(UTC))
    with pytest.raises(jetbridge.ConfigError, match="timezone-aware"):
        await h.producer.enqueue("echo", at=datetime.now())  # noqa: DTZ005 - the mistake under test
    with pytest.raises(jetbridge.ConfigError, match="RFC 3339"):
        await h.producer.enqueue("echo", at="tomorrow")


async def test_an_item_that_comes_early_waits_for_due_again(h: Harness) -> None:
    from jetbridge import _names as names
    from jetbridge._store import js_publish

    async with h.dispatcher(), h.service({"echo": _echo}):
        task_id = await h.producer.enqueue("echo", "x", delay=3)
        due = parse_ns((await h.producer.get(task_id)).due)
        await js_publish(h.producer._rq, names.queue_subject(h.queue, task_id), b'{"kind":0,"job":"%s"}' % task_id.encode())
        done = await h.producer.wait(task_id, timeout=30)
    assert done.task_state is TaskState.COMPLETE and done.tries == 1
    assert done.tried is not None and parse_ns(done.tried) >= due
