"""Reading and bulk-changing tasks: listing the store, and purging a queue without orphaning its tasks."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable

import msgspec
from jetbridge.internal import (
    ConflictError,
    JetbridgeError,
    JetStreamError,
    Requester,
    TaskRecord,
    TaskState,
    TaskStore,
    decode_task,
    js_api,
    names,
    task_state_event,
)
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def iter_tasks(nc: Client, subject: str = f"{names.TASK_SUBJECT_PREFIX}.*",
                     stream: str = names.TASKS_STREAM) -> AsyncIterator[TaskRecord]:
    """Every task in the store (the last message of each task subject), oldest first; corrupt ones are skipped."""
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE,
                            inactive_threshold=30.0, mem_storage=True)
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        while True:
            try:
                batch = await sub.fetch(256, timeout=1.0)
            except TimeoutError:
                return
            for msg in batch:
                try:
                    yield decode_task(msg.data)
                except ValueError:
                    continue
            if not batch or batch[-1].metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def list_tasks(nc: Client, *, queue: str | None = None, state: str | None = None, limit: int = 200) -> list[TaskRecord]:
    """Up to ``limit`` tasks (oldest first), optionally only of one queue or state."""
    found: list[TaskRecord] = []
    async for task in iter_tasks(nc):
        if (queue is None or task.queue == queue) and (state is None or task.state == state):
            found.append(task)
            if len(found) >= limit:
                break
    return found


async def purge_queue(nc: Client, rq: Requester, queue: str, progress: Callable[[int, int], None] | None = None) -> int:
    """Drop every waiting item of ``queue`` and end its tasks ``terminated`` (so nothing is left unfinished).

    Returns how many tasks were ended. ``progress(done, total)`` is called as it goes.
    """
    store = TaskStore(rq)
    stream = names.queue_stream(queue)
    info = await js_api(rq, f"STREAM.INFO.{stream}")
    total = int(info["state"]["messages"])
    ids: list[str] = []
    seq = int(info["state"]["first_seq"])
    while len(ids) < total:  # a work-queue stream admits no second consumer: read items by sequence
        try:
            reply = await js_api(rq, f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": names.queue_subjects(queue)})
        except JetStreamError:
            break
        message = reply["message"]
        seq = int(message["seq"]) + 1
        try:
            ids.append(str(msgspec.json.decode(base64.b64decode(message.get("data", "")))["job"]))
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            continue
    ended = 0
    for i, task_id in enumerate(ids, 1):
        for _ in range(3):
            try:
                task, seq = await store.load(task_id)
                if task.task_state.terminal or task.task_state is TaskState.ACTIVE:
                    break
                task.state, task.last_err = TaskState.TERMINATED.value, f"purged from queue {queue} by an operator"
                task.last_err_code = "purged"
                await store.save(task, seq)
                await nc.publish(names.task_state_event_subject(task.id), task_state_event(task))
                ended += 1
                break
            except ConflictError:
                continue
            except JetbridgeError:
                break
        if progress is not None:
            progress(i, len(ids))
    await js_api(rq, f"STREAM.PURGE.{stream}", {})
    return ended
