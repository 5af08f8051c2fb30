"""taskiq + taskiq-nats 0.7: a pull JetStream broker, batch 100, with a no-op task (runs in the peers' venv).

    python peer_taskiq.py produce N       # N kiq() calls, 100 in flight
    taskiq worker peer_taskiq:broker --workers 1 --max-async-tasks 100 --log-level WARNING

Settings as research/peer_bench.md's headline: ``pull_consume_batch=100``, 100 tasks in flight in one worker
process, ack ``when_saved`` (the default) with the dummy result backend. ``pull_consume_timeout=1`` only lets an
idle worker notice a stop signal; it does not change a busy drain.
"""

from __future__ import annotations

import asyncio
import os
import sys

from common import body, produce, record, start_stats
from taskiq import TaskiqEvents, TaskiqState
from taskiq_nats import PullBasedJetStreamBroker

broker = PullBasedJetStreamBroker(
    os.environ.get("PEER_URL", "nats://127.0.0.1:4222"), subject="peers.taskiq", stream_name="PEER_TASKIQ",
    durable="taskiq_durable", pull_consume_batch=100, pull_consume_timeout=1.0)


@broker.task(task_name="noop")
async def noop(n: int, kind: str, data: str) -> None:
    record(n)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def ready(state: TaskiqState) -> None:
    start_stats()
    print("ready", flush=True)


async def _produce(n: int) -> None:
    await broker.startup()
    try:
        await produce(n, 100, lambda i: noop.kiq(**body(i)))
    finally:
        await broker.shutdown()


if __name__ == "__main__" and sys.argv[1:2] == ["produce"]:
    asyncio.run(_produce(int(sys.argv[2])))
