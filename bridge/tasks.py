"""Listing tasks: read the last message of every task subject with an ephemeral ordered consumer."""

from __future__ import annotations

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from jetbridge import _names as names
from jetbridge._task import TaskRecord, decode_task


async def list_tasks(nc: Client, *, queue: str | None = None, state: str | None = None, limit: int = 200) -> list[TaskRecord]:
    """Up to ``limit`` tasks (oldest first), optionally only of one queue or state. Corrupt records are skipped."""
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE,
                            inactive_threshold=10.0, mem_storage=True)
    sub = await js.pull_subscribe(f"{names.TASK_SUBJECT_PREFIX}.*", stream=names.TASKS_STREAM, config=config)
    found: list[TaskRecord] = []
    try:
        while len(found) < limit:
            try:
                batch = await sub.fetch(min(256, limit), timeout=1.0)
            except TimeoutError:
                break
            for msg in batch:
                try:
                    task = decode_task(msg.data)
                except ValueError:
                    continue
                if (queue is None or task.queue == queue) and (state is None or task.state == state):
                    found.append(task)
            if not batch or batch[-1].metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found[:limit]
