"""Delayed tasks: stored at once, waiting in state ``scheduled`` with their ``due`` time, holding no slot.

A delayed task is saved like any task, but in state ``scheduled`` with a ``due`` member, and instead of a work item
it gets a nats-server message schedule (``Nats-Schedule: @at <second>``) in stream ``JETBRIDGE_SCHEDULES``: the
same machinery as the dispatcher's delayed retries (bridge/retries.py). At the due second the server writes
``jetbridge.due.<queue>.<id>``; a dispatcher's mover waits out the fraction of the second and puts the work item on
the queue, so the task starts within milliseconds of ``due`` and no consumer slot is held while it waits.

asyncjobs tools read the record: Go's decoder takes any state string and ignores the ``due`` member. Cancelling
(``Producer.cancel``) ends the task ``terminated``; the schedule still fires and its item is dropped. Rescheduling
replaces the schedule message (one per task subject); an item that comes early anyway finds the task not due yet
and is scheduled again (bridge/states.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from . import _names as names
from ._errors import ConfigError, ConflictError, JetbridgeError, TransportError
from ._events import task_state_event
from ._store import ERR_STREAM_NOT_FOUND, JetStreamError, js_publish
from ._task import TaskRecord, TaskState
from ._timeutil import NS, format_ns, now_ns, parse_ns

if TYPE_CHECKING:
    from ._producer import Producer, TaskSpec

_json = msgspec.json.Encoder()


class _Due(msgspec.Struct):
    due: int = 0


_due_decoder = msgspec.json.Decoder(_Due)


def due_ns(delay: timedelta | float | None, at: datetime | str | None, now: int) -> int:
    """The due time (UTC ns) of ``delay`` from ``now`` or ``at``; raises ConfigError."""
    if (delay is None) == (at is None):
        raise ConfigError("give either a delay or a due time (at), not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if not 0 <= seconds <= 10 * 365 * 86400:
            raise ConfigError(f"delay must be between 0 and 10 years, not {seconds}s")
        return now + int(seconds * NS)
    if isinstance(at, str):
        try:
            return parse_ns(at)
        except ValueError:
            raise ConfigError(f"due time {at!r} is not an RFC 3339 time such as 2026-12-24T18:00:00+01:00") from None
    assert at is not None
    if at.tzinfo is None:
        raise ConfigError("the due time must be timezone-aware (for example datetime(..., tzinfo=UTC))")
    return int(at.astimezone(UTC).timestamp() * NS)


def due_of(data: bytes) -> int | None:
    """The due time a schedule message carries (None for retries, which carry none)."""
    try:
        return _due_decoder.decode(data).due or None
    except (msgspec.DecodeError, RecursionError):
        return None


async def publish_due(producer: Producer, queue: str, task_id: str, due: int) -> None:
    """Have the task's work item put on ``queue`` at ``due``; at once if it is due within a second."""
    body = _json.encode({"kind": 0, "job": task_id, "due": due})
    second = due // NS * NS - NS  # a second early: the burst of a busy second is moved before it is due
    if second <= now_ns():
        await js_publish(producer._rq, names.queue_subject(queue, task_id), body)
        return
    headers = {names.H_SCHEDULE: f"@at {format_ns(second, digits=0)}",
               names.H_SCHEDULE_TARGET: f"{names.DUE_SUBJECT_PREFIX}.{queue}.{task_id}"}
    try:
        await js_publish(producer._rq, f"{names.SCHEDULE_SUBJECT_PREFIX}.{queue}.{task_id}", body, headers)
    except JetStreamError as exc:
        if exc.err_code == ERR_STREAM_NOT_FOUND:
            raise TransportError(f"stream {names.SCHEDULE_STREAM} does not exist: create the queue with "
                                 f"`jetbridge queue add {queue}` or start a dispatcher first") from None
        raise


async def enqueue_delayed(producer: Producer, spec: TaskSpec, due: int) -> str:
    """Store the task ``scheduled`` and schedule its work item; marks it ``queue_error`` if that fails."""
    doc, queue, _ = producer._build(spec)
    doc.state = TaskState.SCHEDULED.value
    doc.due = format_ns(due)
    seq = await producer._store_new(doc, queue, spec.dedup_key)
    try:
        await publish_due(producer, queue, doc.id, due)
    except (JetStreamError, TransportError) as exc:
        error = producer._queue_error(exc, queue, doc.id)
        doc.state, doc.last_err = TaskState.QUEUE_ERROR.value, str(error)
        try:
            await producer._store.save(doc, seq)
        except JetbridgeError:
            pass
        raise error from None
    await producer._nc.publish(names.task_state_event_subject(doc.id), task_state_event(doc))
    return doc.id


async def reschedule(producer: Producer, task_id: str, due: int) -> TaskRecord:
    """Move a waiting (``scheduled``) task's due time; raises ConflictError once it is no longer waiting."""
    for _ in range(5):
        doc, seq = await producer._store.load(task_id)
        if doc.task_state is not TaskState.SCHEDULED:
            raise ConflictError(f"task {task_id} is {doc.state}, not waiting for its due time: only scheduled "
                                "tasks can be rescheduled")
        doc.due = format_ns(due)
        try:
            await producer._store.save(doc, seq)
        except ConflictError:
            continue
        await publish_due(producer, doc.queue, task_id, due)
        await producer._nc.publish(names.task_state_event_subject(task_id), task_state_event(doc))
        return doc
    raise ConflictError(f"task {task_id} keeps changing: try again")
