"""Bad data in the streams (work items, stored task documents) and clock skew on task times.

A work item the dispatcher cannot use is removed with a reason (the server's MSG_TERMINATED advisory carries it)
and counted; a stored document that is not a usable task is replaced by a terminated record that keeps its bytes
and says what was wrong. Either way the item must not come back forever, and other tasks are not affected.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import jetbridge
import msgspec
import pytest
from jetbridge import _names as names
from jetbridge._events import decode_event
from jetbridge._task import new_task
from jetbridge._timeutil import NS, format_ns, now_ns
from nats.aio.msg import Msg

from tests.bad_input.conftest import assert_unaffected, logged, metric, running
from tests.harness import Harness

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def terminations(h: Harness) -> AsyncIterator[list[dict[str, Any]]]:
    """The server's advisories for work items the dispatcher TERMs (with its reason)."""
    seen: list[dict[str, Any]] = []

    async def on_advisory(msg: Msg) -> None:
        seen.append(msgspec.json.decode(msg.data))

    sub = await h.nc.subscribe(
        f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{names.queue_stream(h.queue)}.{names.QUEUE_CONSUMER}",
        cb=on_advisory)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


async def until(check: Any, within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110 - a counter or log line: nothing announces it
            await anyio.sleep(0.02)


# Work items ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [
    pytest.param(b'{"kind":0,"job":"../../etc/passwd"}', id="job-not-a-task-id"),
    pytest.param(b'{"kind":0,"job":42}', id="job-a-number"),
    pytest.param(b'{"kind":0,"job":"' + b"j" * 300 + b'"}', id="job-too-long"),
    pytest.param(b'{"kind":"zero","job":"x"}', id="kind-not-a-number"),
    pytest.param(b'{"kind":0,"job":"x","extra":' + b"[" * 3000 + b"]" * 3000 + b"}", id="deeply-nested"),
])
async def test_unusable_work_item_is_removed_with_a_reason(h: Harness, logs: Any, item: bytes) -> None:
    async with terminations(h) as terms, running(h) as d:
        await h.nc.jetstream().publish(names.queue_subject(h.queue, "bad-item"), item)
        await until(lambda: len(terms) >= 1)
        await assert_unaffected(h)
        dropped = metric(d.metrics.dropped_items, queue=h.queue, reason="corrupt_item")
    assert terms[0]["reason"] == "corrupt work item"
    assert dropped == 1 and (await h.admin.info(h.queue)).waiting == 0
    [entry] = logged(logs, "corrupt_work_item")
    assert entry["queue"] == h.queue


# Stored task documents ----------------------------------------------------------------------------------------


def _doc(task_id: str, queue: str, **fields: Any) -> bytes:
    base = msgspec.to_builtins(new_task(task_id=task_id, task_type="ok", queue=queue, payload=b'{"n":1}',
                                        content_type="application/json", max_tries=3, created_ns=now_ns(),
                                        deadline_ns=None))
    base.update(fields)
    return msgspec.json.encode({k: v for k, v in base.items() if v is not ...})


async def _store_and_queue(h: Harness, task_id: str, doc: bytes) -> None:
    js = h.nc.jetstream()
    await js.publish(names.task_subject(task_id), doc)
    await js.publish(names.queue_subject(h.queue, task_id), msgspec.json.encode({"kind": 0, "job": task_id}))


@pytest.mark.parametrize(("fields", "why"), [
    pytest.param({"tries": "three"}, "Expected `int`, got `str` - at `$.tries`", id="field-of-the-wrong-type"),
    pytest.param({"payload": "not base64!"}, "at `$.payload`", id="payload-not-base64"),
    pytest.param({"state": ...}, "missing required field `state`", id="required-field-missing"),
    pytest.param({"deadline": "tomorrow"}, "deadline", id="deadline-not-a-time"),
    pytest.param({"created": "2026-13-45T99:99:99Z"}, "created", id="created-not-a-time"),
    pytest.param({"id": "somebody-else"}, "somebody-else", id="id-not-its-subject"),
    pytest.param({"payload": ...}, "missing required field `payload`", id="payload-missing"),
])
async def test_corrupt_stored_task_is_quarantined_naming_the_problem(h: Harness, fields: dict[str, Any], why: str) -> None:
    task_id = f"corrupt-{h.unique}"
    doc = _doc(task_id, h.queue, **fields)
    async with running(h) as d:
        await _store_and_queue(h, task_id, doc)
        record = await h.producer.wait(task_id, timeout=15)
        await assert_unaffected(h)
        quarantined = metric(d.metrics.dropped_items, queue=h.queue, reason="corrupt_task")
    assert (record.state, record.last_err_code, record.tries) == ("terminated", "corrupt_task", 0)
    assert record.last_err.startswith("the stored task document is corrupt") and why in record.last_err
    assert record.payload == doc  # the original bytes are kept for inspection
    assert quarantined == 1 and (await h.admin.info(h.queue)).waiting == 0


async def test_deeply_nested_stored_task_is_quarantined(h: Harness) -> None:
    task_id = f"deep-{h.unique}"
    doc = _doc(task_id, h.queue)[:-1] + b',"x":' + b"[" * 3000 + b"]" * 3000 + b"}"
    async with running(h):
        await _store_and_queue(h, task_id, doc)
        record = await h.producer.wait(task_id, timeout=15)
        await assert_unaffected(h)
    assert (record.state, record.last_err_code) == ("terminated", "corrupt_task")
    assert "nested too deeply" in record.last_err


async def test_unknown_stored_state_is_not_run_and_says_why(h: Harness) -> None:
    """A state this dispatcher does not know (a newer asyncjobs?) is left alone: not run, not rewritten."""
    task_id = f"odd-{h.unique}"
    calls = 0

    async def count(task: jetbridge.Task) -> Any:
        nonlocal calls
        calls += 1

    async with running(h), h.service({"odd": count}), terminations(h):
        await _store_and_queue(h, task_id, _doc(task_id, h.queue, type="odd", state="paused"))
        await assert_unaffected(h)
        with anyio.fail_after(10):
            while (await h.admin.info(h.queue)).waiting:  # noqa: ASYNC110 - an ACK has no advisory to await
                await anyio.sleep(0.05)
        record = await h.producer.get(task_id)
    assert calls == 0 and record.state == "paused"


# Clock skew -------------------------------------------------------------------------------------------------


async def test_deadline_far_in_the_future_runs_normally(h: Harness) -> None:
    async with running(h):
        task_id = await h.producer.enqueue("ok", 1, deadline=datetime(9999, 12, 31, tzinfo=UTC))
        record = await h.producer.wait(task_id, timeout=10)
        await assert_unaffected(h)
    assert (record.state, record.tries) == ("complete", 1)
    assert record.deadline is not None and record.deadline.startswith("9999-12-31")


async def test_created_in_the_future_runs_normally(h: Harness) -> None:
    """A producer whose clock runs an hour ahead: the task runs; events report age 0, not a negative age."""
    task_id = f"future-{h.unique}"
    ages: list[int] = []

    async def on_event(msg: Msg) -> None:
        ages.append(decode_event(msg.data).task_age)

    sub = await h.nc.subscribe(names.task_state_event_subject(task_id), cb=on_event)
    async with running(h):
        created = format_ns(now_ns() + 3600 * NS)
        await _store_and_queue(h, task_id, _doc(task_id, h.queue, created=created))
        record = await h.producer.wait(task_id, timeout=10)
        await assert_unaffected(h)
    await sub.unsubscribe()
    assert (record.state, record.tries, record.created) == ("complete", 1, created)
    assert ages and all(age == 0 for age in ages)


async def test_deadline_before_created_expires_without_an_attempt(h: Harness) -> None:
    task_id = f"inverted-{h.unique}"
    now = now_ns()
    async with running(h):
        await _store_and_queue(h, task_id, _doc(task_id, h.queue, created=format_ns(now),
                                                deadline=format_ns(now - 3600 * NS)))
        record = await h.producer.wait(task_id, timeout=10)
        await assert_unaffected(h)
    assert (record.state, record.tries, record.last_err_code) == ("expired", 0, "deadline")
    assert f"deadline {record.deadline} passed before attempt 1 could start" == record.last_err


async def test_deadline_with_an_offset_is_honoured(h: Harness) -> None:
    """A deadline written with a +05:00 offset that is already past in UTC expires; one in the future runs."""
    east = timezone(timedelta(hours=5))
    past = (datetime.now(UTC) - timedelta(minutes=1)).astimezone(east).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).astimezone(east).isoformat()
    async with running(h):
        for name, deadline in (("past", past), ("future", future)):
            await _store_and_queue(h, f"{name}-{h.unique}", _doc(f"{name}-{h.unique}", h.queue, deadline=deadline))
        late = await h.producer.wait(f"past-{h.unique}", timeout=10)
        fine = await h.producer.wait(f"future-{h.unique}", timeout=10)
    assert (late.state, late.last_err_code, fine.state) == ("expired", "deadline", "complete")


async def test_deadline_reached_during_the_attempt_cuts_it_short(h: Harness) -> None:
    budgets: list[float] = []

    async def slow(task: jetbridge.Task) -> Any:
        budgets.append(task.budget)
        await anyio.sleep(5)

    async with running(h), h.service({"slow": slow}):
        task_id = await h.producer.enqueue("slow", deadline=timedelta(seconds=1.0))
        record = await h.producer.wait(task_id, timeout=10)
        await assert_unaffected(h)
    assert (record.state, record.tries, record.last_err_code) == ("expired", 1, "deadline")
    assert record.last_err == f"deadline {record.deadline} passed during attempt 1"
    assert budgets and budgets[0] <= 1.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
