"""A dispatcher, a handler service and a producer wired to one real server, isolated by unique names.

Each test gets its own queue and its own handler subject prefix, so tests sharing the session's nats-server
never see each other's tasks or handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import jetbridge
from jetbridge._requester import Requester
from nats.aio.client import Client

from bridge.dispatcher import Dispatcher
from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import Settings


@asynccontextmanager
async def running_dispatcher(nc: Client, settings: Settings) -> AsyncIterator[Dispatcher]:
    """A dispatcher serving until the block ends."""
    async with anyio.create_task_group() as tg:
        dispatcher = await tg.start(Dispatcher(nc, settings).run)
        try:
            yield dispatcher
        finally:
            dispatcher.stop()


@asynccontextmanager
async def running_service(
    nc: Client, name: str, prefix: str, handlers: dict[str, Callable[[jetbridge.Task], Awaitable[Any]]],
    **options: Any,
) -> AsyncIterator[jetbridge.Service]:
    """A handler service serving ``handlers`` until the block ends."""
    service = jetbridge.Service(nc, name, prefix=prefix, **options)
    for task_type, fn in handlers.items():
        service.add_handler(task_type, fn)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        try:
            yield service
        finally:
            service.stop()


class Harness:
    def __init__(self, nc: Client, unique: str) -> None:
        self.nc = nc
        self.unique = unique
        self.queue = f"Q{unique}"
        self.prefix = f"jb.{unique}"
        self.admin = QueueAdmin(Requester(nc))
        self.producer = jetbridge.Producer(nc, queue=self.queue)

    async def make_queue(self, **options: Any) -> QueueConfig:
        defaults: dict[str, Any] = {"retry": "fixed:0.05", "lease": 2.0, "max_run_time": 10.0}
        return await self.admin.add(QueueConfig(name=self.queue, **{**defaults, **options}))

    def settings(self, **overrides: Any) -> Settings:
        base = Settings(queues=(self.queue,), subject_prefix=self.prefix, no_handler_delay=0.1, shutdown_grace=5.0,
                        create_queues=False, fire_schedules=False)  # tests share one server: fire only when asked
        return replace(base, **overrides)

    @asynccontextmanager
    async def dispatcher(self, **overrides: Any) -> AsyncIterator[Dispatcher]:
        async with running_dispatcher(self.nc, self.settings(**overrides)) as dispatcher:
            yield dispatcher

    @asynccontextmanager
    async def service(
        self, handlers: dict[str, Callable[[jetbridge.Task], Awaitable[Any]]], *, nc: Client | None = None,
        **options: Any,
    ) -> AsyncIterator[jetbridge.Service]:
        async with running_service(nc or self.nc, f"svc-{self.unique}", self.prefix, handlers, **options) as service:
            yield service

    @asynccontextmanager
    async def events(self, task_id: str | None = None) -> AsyncIterator[Any]:
        """A stream of lifecycle events (all tasks, or one), subscribed before the caller acts."""
        from jetbridge._events import decode_event

        send, receive = anyio.create_memory_object_stream[Any](1000)

        async def on_msg(msg: Any) -> None:
            send.send_nowait(decode_event(msg.data))

        subject = f"CHORIA_AJ.E.task_state.{task_id or '*'}"
        sub = await self.nc.subscribe(subject, cb=on_msg)
        try:
            yield receive
        finally:
            await sub.unsubscribe()

    async def run(self, task_type: str, payload: Any = None, *, timeout: float = 20.0, **options: Any) -> jetbridge.TaskRecord:
        task_id = await self.producer.enqueue(task_type, payload, **options)
        return await self.producer.wait(task_id, timeout=timeout)
