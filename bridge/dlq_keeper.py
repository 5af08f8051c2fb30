"""``jetbridge dlq keep``: one long-running process that keeps the task index for everyone.

It follows the task store (:class:`bridge.index.TaskIndex`), answers index queries for one-shot commands
(:mod:`bridge.index_service`), sets the ``jetbridge_dead_letters_stored`` gauge per queue, and applies each queue's
dead-letter retention every ``interval``. Running two is safe: they share queries in a queue group, and a dead letter
two keepers both drop is deleted once (deleting a missing task is a no-op).

Tasks the server removes by itself (``retain_finished`` TTLs) or that are deleted by tools that do not tell the index
leave no message on the stream. When the index holds more tasks than the store in two rounds running, the keeper
builds a new index beside the old one and swaps them once the new one has caught up.
"""

from __future__ import annotations

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from jetbridge.internal import Requester, js_api, names
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
        self._stale_rounds = 0
        self._following: anyio.CancelScope | None = None
        #: how many times the index was rebuilt because it held tasks the store no longer has
        self.rebuilds = 0

    async def next_round(self) -> None:
        """Wait until the next round of retention and gauge has ended."""
        await self._round.wait()

    def update_gauge(self) -> dict[str, int]:
        counts = self.index.counts_by_queue(dlq.DEAD_STATES)
        for queue in self._queues | set(counts):
            self.gauge.labels(queue).set(counts.get(queue, 0))
        self._queues |= set(counts)
        return counts

    async def _follow(self, index: TaskIndex, *,
                      task_status: TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await index.follow(self.nc)

    async def _check_stale(self, rq: Requester, tg: TaskGroup) -> None:
        stored = int((await js_api(rq, f"STREAM.INFO.{names.TASKS_STREAM}"))["state"]["messages"])
        self._stale_rounds = self._stale_rounds + 1 if len(self.index) > stored else 0
        if self._stale_rounds < 2:
            return
        log.info("task_index_rebuild", indexed=len(self.index), stored=stored,
                 hint="tasks were removed without a message (TTL, other tools); reading the store again")
        fresh = TaskIndex()
        scope = await tg.start(self._follow, fresh)
        await fresh.caught_up.wait()
        if self._following is not None:
            self._following.cancel()
        self.index, self._following, self._stale_rounds = fresh, scope, 0
        self.rebuilds += 1

    async def run(self, *, task_status: TaskStatus[Keeper] = anyio.TASK_STATUS_IGNORED) -> None:
        rq = Requester(self.nc)
        try:
            async with anyio.create_task_group() as tg:
                self._following = await tg.start(self._follow, self.index)
                await self.index.caught_up.wait()
                tg.start_soon(index_service.serve, self.nc, lambda: self.index)
                self.update_gauge()
                self.metrics.ready.set(1)
                log.info("dlq_keeper_started", tasks=len(self.index), interval_s=self.interval)
                task_status.started(self)
                while True:
                    try:
                        queues = await QueueAdmin(rq).names()
                        self._queues |= set(queues)
                        await dlq.enforce_retention(rq, self.index, queues)
                        await self._check_stale(rq, tg)
                    except Exception as exc:  # noqa: BLE001 - try again next round
                        log.warning("dlq_round_failed", error=repr(exc))
                    self.update_gauge()
                    self._round.set()
                    self._round = anyio.Event()
                    await anyio.sleep(self.interval)
        finally:
            self.metrics.ready.set(0)
            await rq.close()
