"""The reconciler: no accepted task may sit without a work item.

A task can lose its work item without anyone noticing: a producer dies between saving the task and queueing the
item (asyncjobs' enqueue window), a full ``discard_old`` queue drops its oldest item, an item outlives ``max_age``.
Now and then every dispatcher scans the task store for unfinished tasks of its queues that have neither a work
item nor a scheduled retry, and puts an item back. Several dispatchers doing so at once is harmless: a queue keeps
one item per task subject.
"""

from __future__ import annotations

import structlog
from jetbridge.internal import (
    ERR_NO_MESSAGE,
    NS,
    JetStreamError,
    Requester,
    TaskState,
    js_api,
    js_publish,
    names,
    now_ns,
    parse_ns,
)
from nats.aio.client import Client

from .retries import due_subject, schedule_subject
from .tasks import iter_tasks

log = structlog.get_logger("jetbridge.reconcile")
_UNFINISHED = {TaskState.NEW, TaskState.RETRY, TaskState.NO_HANDLER, TaskState.ACTIVE, TaskState.SCHEDULED}


async def _message_seq(rq: Requester, stream: str, subject: str) -> int | None:
    """The stream sequence of the message on ``subject``, or None when there is none."""
    try:
        reply = await js_api(rq, f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
    except JetStreamError as exc:
        if exc.err_code == ERR_NO_MESSAGE or exc.code == 404:
            return None
        raise
    return int(reply["message"]["seq"])


async def _has_message(rq: Requester, stream: str, subject: str) -> bool:
    return await _message_seq(rq, stream, subject) is not None


async def _ack_floor(rq: Requester, queue: str) -> int:
    """The queue consumer's ack floor: an item at or below it is never delivered again."""
    info = await js_api(rq, f"CONSUMER.INFO.{names.queue_stream(queue)}.{names.QUEUE_CONSUMER}")
    return int((info.get("ack_floor") or {}).get("stream_seq", 0))


async def _item_is_live(rq: Requester, queue: str, subject: str, floors: dict[str, int]) -> bool:
    """True when the task has an item the queue consumer will still deliver.

    An item can sit at or below the consumer's ack floor (seen after a second item replaced one in flight): the
    consumer never delivers it again and the work queue never removes it. Such an item is deleted, so the
    caller puts a fresh one on the queue.
    """
    stream = names.queue_stream(queue)
    seq = await _message_seq(rq, stream, subject)
    if seq is None:
        return False
    if queue not in floors:
        floors[queue] = await _ack_floor(rq, queue)
    if seq > floors[queue]:
        return True
    await js_api(rq, f"STREAM.MSG.DELETE.{stream}", {"seq": seq})
    log.warning("stranded_item_removed", queue=queue, subject=subject, seq=seq, ack_floor=floors[queue],
                hint="the item was below the consumer's ack floor and would never be delivered")
    return False


async def reconcile(nc: Client, rq: Requester, queues: dict[str, float], *, now: int | None = None) -> list[str]:
    """Re-queue orphaned tasks of ``queues`` (name -> seconds a task may go without an item); return their ids."""
    now = now or now_ns()
    fixed: list[str] = []
    floors: dict[str, int] = {}
    async for task in iter_tasks(nc):
        grace = queues.get(task.queue)
        if grace is None or task.task_state not in _UNFINISHED:
            continue
        try:
            last_touched = parse_ns(task.tried) if task.tried else task.created_ns
        except ValueError:  # an unreadable time: requeue it, and the dispatcher quarantines the document
            last_touched = 0
        if now - last_touched < grace * NS:
            continue
        if await _item_is_live(rq, task.queue, names.queue_subject(task.queue, task.id), floors):
            continue
        if await _has_message(rq, names.SCHEDULE_STREAM, schedule_subject(task.queue, task.id)) or \
                await _has_message(rq, names.SCHEDULE_STREAM, due_subject(task.queue, task.id)):
            continue
        item = names.work_item(task.id)
        try:
            await js_publish(rq, names.queue_subject(task.queue, task.id), item)
        except JetStreamError as exc:
            log.warning("reconcile_failed", task_id=task.id, queue=task.queue, error=str(exc))
            continue
        log.warning("orphan_requeued", task_id=task.id, queue=task.queue, state=task.state,
                    hint="the task had no work item (enqueue interrupted, or dropped by discard_old / max_age)")
        fixed.append(task.id)
    return fixed
