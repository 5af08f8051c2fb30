"""What the HTTP layer talks to: one NATS connection, the task index, and the SDK's producer, queue admin and
schedules. One :class:`Backend` per process, built by the app's lifespan (or handed in by tests)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from jetbridge.internal import Producer, Requester, Schedules
from nats.aio.client import Client

from ..index import TaskIndex
from ..index_service import LocalView
from ..index_service import serve as serve_index
from ..queues import QueueAdmin
from .charts import HourCache
from .online import online, online_dispatchers

log = structlog.get_logger("jetbridge.web")


@dataclass
class Backend:
    nc: Client
    #: the queue a task goes to when the request names none (asyncjobs' bound queue)
    queue: str = "DEFAULT"
    index: TaskIndex = field(default_factory=TaskIndex)
    started: float = field(default_factory=time.time)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rq = Requester(self.nc)
        self.producer = Producer(self.nc, queue=self.queue)
        self.admin = QueueAdmin(self.rq)
        self.schedules = Schedules(self.nc, producer=self.producer)
        self.view = LocalView(self.index)
        self.hour = HourCache()  # the overview's last hour (bridge/web/charts.py)

    async def start(self, *, share_index: bool = True) -> None:
        """Follow the task store (and answer other processes' index queries, as ``dlq keep`` does).

        The stores are created first if missing, as a dispatcher would, so the API works on a fresh server.
        """
        await self.admin.ensure_stores()
        self._tasks.append(asyncio.create_task(self.index.follow(self.nc)))
        if share_index:
            self._tasks.append(asyncio.create_task(serve_index(self.nc, lambda: self.index)))

    @property
    def ready(self) -> bool:
        return self.nc.is_connected and self.index.caught_up.is_set()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the index has read the store; a failure to follow it is raised here rather than hanging."""
        caught_up = asyncio.ensure_future(self.index.caught_up.wait())
        await asyncio.wait({caught_up, self._tasks[0]}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not caught_up.done():
            caught_up.cancel()
            if self._tasks[0].done():
                self._tasks[0].result()
            raise TimeoutError("the task index did not catch up in time")

    async def online(self, window: float = 0.5) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Handler instances and dispatchers online, from NATS micro discovery (see bridge/web/online.py)."""
        return await online(self.nc, window, time.time())

    async def handlers(self, window: float = 0.5) -> list[dict[str, Any]]:
        return (await self.online(window))[0]

    async def dispatchers(self, window: float = 0.5) -> list[dict[str, Any]]:
        return await online_dispatchers(self.nc, window, time.time())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        await self.schedules.close()
        await self.rq.close()
