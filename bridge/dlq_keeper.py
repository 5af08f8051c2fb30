"""``jetbridge dlq keep``: one long-running process that keeps the task index for everyone.

It follows the task store (:class:`bridge.index.TaskIndex`), answers index queries for one-shot commands
(:mod:`bridge.index_service`), sets the ``jetbridge_dead_letters_stored`` gauge per queue, and applies each queue's
dead-letter retention every ``interval``. Running two is safe: they share queries in a queue group, and a dead letter
two keepers both drop is deleted once (deleting a missing task is a no-op).
"""

from __future__ import annotations

import anyio
import structlog
from anyio.abc import TaskStatus
from jetbridge._requester import Requester
from nats.aio.client import Client

from . import dlq, index_service
from .index import TaskIndex
from .metrics import Metrics
from .queues import QueueAdmin

log = structlog.get_logger("jetbridge.dlq")


class Keeper:
    def __init__(self, nc: Client, metrics: Metrics, *, interval: float = 30.0) -> None:
        self.nc = nc
        self.metrics = metrics
        self.interval = interval
        self.index = TaskIndex()
        self.gauge = dlq.gauge(metrics.registry)
        self._queues: set[str] = set()
        self._round = anyio.Event()

    async def next_round(self) -> None:
        """Wait until the next round of retention and gauge has ended."""
        await self._round.wait()

    def update_gauge(self) -> dict[str, int]:
        counts = self.index.counts_by_queue(dlq.DEAD_STATES)
        for queue in self._queues | set(counts):
            self.gauge.labels(queue).set(counts.get(queue, 0))
        self._queues |= set(counts)
        return counts

    async def run(self, *, task_status: TaskStatus[Keeper] = anyio.TASK_STATUS_IGNORED) -> None:
        rq = Requester(self.nc)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.index.follow, self.nc)
                await self.index.caught_up.wait()
                tg.start_soon(index_service.serve, self.nc, self.index)
                self.update_gauge()
                self.metrics.ready.set(1)
                log.info("dlq_keeper_started", tasks=len(self.index), interval_s=self.interval)
                task_status.started(self)
                while True:
                    try:
                        names = await QueueAdmin(rq).names()
                        self._queues |= set(names)
                        await dlq.enforce_retention(rq, self.index, names)
                    except Exception as exc:  # noqa: BLE001 - try again next round
                        log.warning("dlq_retention_failed", error=repr(exc))
                    self.update_gauge()
                    self._round.set()
                    self._round = anyio.Event()
                    await anyio.sleep(self.interval)
        finally:
            self.metrics.ready.set(0)
            await rq.close()
