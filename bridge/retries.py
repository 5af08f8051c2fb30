"""Delayed retries that hold no concurrency slot.

asyncjobs delays a retry by NAKing its work item with a delay, and a NAKed item still counts against the
consumer's ``max_ack_pending``: a backlog of waiting retries starves fresh work. Jetbridge instead acks the item
and publishes a server-side message schedule (nats-server ≥ 2.12, ``Nats-Schedule: @at <time>``) into its own
stream ``JETBRIDGE_SCHEDULES``. At the scheduled second the server writes ``jetbridge.due.<queue>.<id>``; the
:class:`Mover` turns each due message back into a work item on the queue. Schedules have one-second precision, so
retries sooner than a second are NAKed with a delay instead (they hold a slot only briefly).

Crash safety: the task is saved ``retry`` before the schedule is published, and the item is acked only after the
schedule's PubAck. A crash in between redelivers the item early, which runs the retry sooner, never loses it.
"""

from __future__ import annotations

import math

import anyio
import structlog
from jetbridge.internal import (
    ERR_MAX_MESSAGES,
    ERR_STREAM_NOT_FOUND,
    NS,
    JetStreamError,
    Requester,
    TransportError,
    due_of,
    format_ns,
    js_api,
    js_publish,
    names,
    now_ns,
)
from nats.aio.client import Client
from nats.aio.msg import Msg

log = structlog.get_logger("jetbridge.retries")
MOVER_CONSUMER = "MOVER"


def schedule_subject(queue: str, task_id: str) -> str:
    return f"{names.SCHEDULE_SUBJECT_PREFIX}.{queue}.{task_id}"


def due_subject(queue: str, task_id: str) -> str:
    return f"{names.DUE_SUBJECT_PREFIX}.{queue}.{task_id}"


class RetryScheduler:
    def __init__(self, requester: Requester) -> None:
        self._rq = requester

    async def ensure_mover_consumer(self) -> None:
        config = {"durable_name": MOVER_CONSUMER, "ack_policy": "explicit", "ack_wait": 30 * NS,
                  "max_deliver": -1, "filter_subject": f"{names.DUE_SUBJECT_PREFIX}.>", "max_ack_pending": 10_000}
        await js_api(self._rq, f"CONSUMER.CREATE.{names.SCHEDULE_STREAM}.{MOVER_CONSUMER}",
                     {"stream_name": names.SCHEDULE_STREAM, "config": config})

    async def schedule(self, queue: str, task_id: str, delay: float) -> None:
        """Have the task's work item put back on ``queue`` in ``delay`` seconds (rounded up to the second)."""
        at_ns = math.ceil((now_ns() + delay * NS) / NS) * NS
        headers = {names.H_SCHEDULE: f"@at {format_ns(at_ns, digits=0)}",
                   names.H_SCHEDULE_TARGET: due_subject(queue, task_id)}
        await js_publish(self._rq, schedule_subject(queue, task_id), names.work_item(task_id), headers)


class Mover:
    """Turns due schedules into work items again. Every dispatcher runs one; they share one consumer."""

    def __init__(self, nc: Client, requester: Requester) -> None:
        self._nc = nc
        self._rq = requester

    async def move(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        if len(parts) != 4 or not names.is_valid_name(parts[2]) or not names.is_valid_name(parts[3]):
            log.warning("bad_due_message", subject=msg.subject)
            await msg.term()
            return
        queue, task_id = parts[2], parts[3]
        due = due_of(msg.data)
        if due is not None and due > now_ns():  # delayed tasks are fired a second early (jetbridge._delay)
            await anyio.sleep(min(3.0, (due - now_ns()) / NS))
        item = names.work_item(task_id)
        try:
            await js_publish(self._rq, names.queue_subject(queue, task_id), item)
        except JetStreamError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                log.error("retry_queue_missing", task_id=task_id, queue=queue,
                          hint=f"queue {queue} was deleted; `jetbridge task retry {task_id} --queue Q` moves it")
                await msg.term()
                return
            if exc.err_code in ERR_MAX_MESSAGES:
                log.warning("retry_queue_full", task_id=task_id, queue=queue, hint="will try again in 1s")
            await msg.nak(delay=1.0)
            return
        except TransportError:
            await msg.nak(delay=1.0)
            return
        await msg.ack()
