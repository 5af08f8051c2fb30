"""One language's world: its own nats-server, queues, an in-process dispatcher and two handler replicas.

Everything a case touches is private to the language under test: a fresh server (so one language's leftovers,
such as a task still sleeping after a failed case, cannot disturb the next language), a unique subject prefix
(passed to the handler as ``JETBRIDGE_SUBJECT_PREFIX``, so a stray handler on the default subjects can never
answer), and replicas named ``<lang>-a`` and ``<lang>-b`` so events say which one ran an attempt.

Settings are short on purpose (:class:`Timing`): a one-second lease makes "the handler died" and "heartbeats
keep it alive" observable in seconds rather than the production default of half a minute.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import nats
from anyio.abc import TaskGroup
from bridge.dispatcher import Dispatcher
from bridge.embedded import NatsServer
from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import Settings
from jetbridge import _names as names
from jetbridge._requester import Requester
from nats.aio.client import Client

from .inbox import Inbox, Received
from .processes import Replica, ReplicaError
from .registry import CaseFailure, describe

EVENTS_SUBJECT = "jetbridge.conformance.events"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Timing:
    """The queue settings and bounds the suite runs with. Durations are seconds."""

    #: heartbeat timeout (the dispatcher asks for a heartbeat every lease/3)
    lease: float = 1.0
    #: retry policy for failed attempts: short, so retries do not dominate the run time
    retry: str = "fixed:0.1s"
    #: the main queue's attempt budget: above every conf:sleep the cases use, below the case timeouts
    max_run_time: float = 10.0
    #: the short queue's attempt budget, for the stale-reply case
    short_run_time: float = 1.0
    #: how long a replica may take from exec to `ready` (a cold Node start takes about a second)
    ready: float = 30.0
    #: how long the dispatcher may take to set up its stores and consumers
    dispatcher: float = 30.0
    #: how long one task may take to reach a terminal state in a simple case
    task: float = 15.0


class SetupError(Exception):
    """The language's environment could not be built: the whole language fails with this reason."""


class LanguageEnv:
    """What a case gets: the producer, the dispatcher, the handler replicas and the event inboxes."""

    MAIN_QUEUE = "CONF"
    SHORT_QUEUE = "CONF_SHORT"
    REPLICAS = ("a", "b")

    def __init__(self, *, lang: str, script: Path, log_dir: Path, timing: Timing, tg: TaskGroup,
                 server: NatsServer, nc: Client, dispatcher: Dispatcher, prefix: str) -> None:
        self.lang = lang
        self.script = script
        self.log_dir = log_dir
        self.timing = timing
        self.tg = tg
        self.server = server
        #: the suite's own connection: producer, inboxes and direct requests (the dispatcher has its own)
        self.nc = nc
        self.dispatcher = dispatcher
        self.prefix = prefix
        self.producer = jetbridge.Producer(nc, queue=self.MAIN_QUEUE)
        #: the handlers' `started` and `cancelled` events
        self.events = Inbox(nc, EVENTS_SUBJECT)
        #: the dispatcher's task state events (asyncjobs lifecycle events), for every task
        self.task_events = Inbox(nc, names.task_state_event_subject("*"))
        self.replicas: dict[str, Replica] = {}

    # Building and tearing down ------------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(cls, lang: str, script: Path, log_dir: Path, timing: Timing) -> AsyncIterator[LanguageEnv]:
        """Start the server, queues, dispatcher and replicas; tear all of it down on exit, whatever happened."""
        store = Path(tempfile.mkdtemp(prefix=f"jetbridge-conformance-{lang}-"))
        server = NatsServer(store / "nats", name=f"conformance-{lang}")
        try:
            await anyio.to_thread.run_sync(server.start)
        except RuntimeError as exc:
            shutil.rmtree(store, ignore_errors=True)
            raise SetupError(f"nats-server did not start: {exc}") from None
        try:
            async with _connection(server, f"conformance-{lang}") as nc, \
                    _connection(server, f"dispatcher-{lang}") as dnc, anyio.create_task_group() as tg:
                prefix = f"conf.{lang}.{secrets.token_hex(4)}"
                dispatcher = await _start_dispatcher(tg, dnc, nc, prefix, timing)
                env = cls(lang=lang, script=script, log_dir=log_dir, timing=timing, tg=tg, server=server, nc=nc,
                          dispatcher=dispatcher, prefix=prefix)
                try:
                    await env.events.start()
                    await env.task_events.start()
                    await env._start_replicas()
                    yield env
                finally:
                    with anyio.CancelScope(shield=True):
                        await env._close()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):  # even on Ctrl-C: no server left running, no store left behind
                await anyio.to_thread.run_sync(server.stop)
            shutil.rmtree(store, ignore_errors=True)

    async def _start_replicas(self) -> None:
        for suffix in self.REPLICAS:
            instance = f"{self.lang}-{suffix}"
            self.replicas[instance] = Replica(
                instance=instance, script=self.script, log_dir=self.log_dir,
                env={**os.environ, "NATS_URL": self.server.url, "JETBRIDGE_SUBJECT_PREFIX": self.prefix,
                     "JETBRIDGE_INSTANCE": instance, "JETBRIDGE_CONCURRENCY": "64"})
        try:
            await self.ensure_replicas()
        except ReplicaError as exc:
            raise SetupError(f"handler did not start: {exc}") from None

    async def _close(self) -> None:
        with anyio.move_on_after(20):
            async with anyio.create_task_group() as tg:
                for replica in self.replicas.values():
                    tg.start_soon(replica.stop)
        for replica in self.replicas.values():
            await replica.kill()
        self.dispatcher.stop()
        with anyio.move_on_after(15):
            await self.dispatcher.stopped.wait()
        await self.events.stop()
        await self.task_events.stop()

    # What cases use ----------------------------------------------------------------------------------------

    async def ensure_replicas(self) -> None:
        """Start every replica that is not running (a case before may have killed or drained one)."""
        for replica in self.replicas.values():
            if not replica.alive:
                await replica.start(self.tg, timeout=self.timing.ready)

    def replica(self, instance: str) -> Replica:
        try:
            return self.replicas[instance]
        except KeyError:
            raise CaseFailure(f"an event named instance {instance!r}, which is none of the replicas "
                              f"{sorted(self.replicas)}: the handler ignores JETBRIDGE_INSTANCE") from None

    async def enqueue(self, task_type: str, payload: Any = None, **options: Any) -> str:
        return await self.producer.enqueue(task_type, payload, **options)

    async def wait(self, task_id: str, timeout: float | None = None) -> jetbridge.TaskRecord:
        """The task once it has ended; on timeout, a failure that says where it got stuck."""
        timeout = timeout or self.timing.task
        try:
            return await self.producer.wait(task_id, timeout=timeout)
        except TimeoutError:
            record = await self.producer.get(task_id)
            raise CaseFailure(f"task {task_id} did not end within {timeout:g}s: {describe(record)}") from None

    async def run(self, task_type: str, payload: Any = None, *, timeout: float | None = None,
                  **options: Any) -> jetbridge.TaskRecord:
        """Enqueue a task and wait for its end."""
        return await self.wait(await self.enqueue(task_type, payload, **options), timeout)

    async def started(self, task_id: str, attempt: int, timeout: float | None = None) -> Received:
        """The handler's `started` event for one attempt."""
        return await self.events.wait_for(f"`started` event for task {task_id} attempt {attempt}",
                                          timeout=timeout or self.timing.task, event="started",
                                          task_id=task_id, attempt=attempt)

    def stale_replies(self) -> float:
        """The dispatcher's ``jetbridge_stale_messages{kind="reply"}``."""
        value = self.dispatcher.metrics.registry.get_sample_value("jetbridge_stale_messages_total",
                                                                  {"kind": "reply"})
        return value or 0.0


@asynccontextmanager
async def _connection(server: NatsServer, name: str) -> AsyncIterator[Client]:
    async def quiet(exc: Exception) -> None:
        """Connection errors surface as failed requests in the cases; the default callback only adds noise."""

    # Reconnecting without limit (every 0.25 s): the restart case stops and starts the server under them.
    nc = await nats.connect(server.url, name=name, error_cb=quiet, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
    try:
        yield nc
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()


async def _start_dispatcher(tg: TaskGroup, dnc: Client, nc: Client, prefix: str, timing: Timing) -> Dispatcher:
    requester = Requester(nc)
    admin = QueueAdmin(requester)
    try:
        await admin.add(QueueConfig(name=LanguageEnv.MAIN_QUEUE, lease=timing.lease, retry=timing.retry,
                                    max_run_time=timing.max_run_time))
        await admin.add(QueueConfig(name=LanguageEnv.SHORT_QUEUE, lease=timing.short_run_time, retry=timing.retry,
                                    max_run_time=timing.short_run_time))
    except jetbridge.JetbridgeError as exc:
        raise SetupError(f"could not create the queues: {exc}") from None
    finally:
        await requester.close()
    settings = Settings(queues=(LanguageEnv.MAIN_QUEUE, LanguageEnv.SHORT_QUEUE), subject_prefix=prefix,
                        create_queues=False, no_handler_delay=0.1, shutdown_grace=2.0,
                        dispatcher_id=f"conf-{secrets.token_hex(4)}")
    with anyio.move_on_after(timing.dispatcher):
        dispatcher: Dispatcher = await tg.start(Dispatcher(dnc, settings).run)
        return dispatcher
    raise SetupError(f"the dispatcher was not ready within {timing.dispatcher:g}s")
