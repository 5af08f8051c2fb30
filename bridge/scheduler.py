"""The schedule firing loop that every dispatcher runs: no leader, no single point of failure.

Each dispatcher follows the schedule definitions (a KV watch, resynced now and then), sleeps until a schedule's
next slot and then carries out :func:`bridge.schedules.next_step` against the stored state, recording each
decision with a compare-and-set. All dispatchers race for every slot; the loser of the task create sees a
duplicate, the loser of the state write reloads and finds the slot decided. Nothing is decided in memory only,
so a dispatcher SIGKILLed at any point leaves work the others finish (see :mod:`bridge.schedules`).

Why not nats-server's own schedules: the pinned server (2.15.1) does fire six-field cron with a time zone, but the
fired message names no slot (so a task id cannot be derived from it), slots missed while the server was down are
neither fired nor reported, it fires on creation when the current second matches, and it has no overlap, catch-up,
jitter or backfill; definitions would also live twice (asyncjobs' KV documents and the schedule messages).
Delayed tasks do use server schedules (``@at``, see :mod:`jetbridge._delay`).
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import msgspec
import structlog
from jetbridge.internal import (
    DEF_PREFIX,
    NS,
    JetbridgeError,
    Producer,
    ScheduleDoc,
    ScheduleState,
    TaskNotFoundError,
    config_bucket,
    decode_doc,
    decode_state,
    def_key,
    fire,
    now_ns,
    schedule_names,
    slot_task_id,
    state_key,
)
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry, Counter

from .schedules import Step, StepKind, apply_step, needs_previous, next_step

log = structlog.get_logger("jetbridge.scheduler")
_json = msgspec.json.Encoder()
_MISSING = (KeyNotFoundError, KeyDeletedError)
#: how often the definitions are listed again in full (the watch covers changes in between)
RESYNC_EVERY = 10.0
#: longest sleep between looks at the clock (bounds the effect of clock jumps)
MAX_SLEEP = 1.0


class ScheduleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.fires = Counter("jetbridge_schedule_fires", "Schedule slots fired by this dispatcher", ["schedule"],
                             registry=registry)
        self.missed = Counter("jetbridge_schedule_missed", "Schedule slots not fired, by reason (catchup: older "
                              "than the catch-up window; overlap: previous task unfinished)", ["schedule", "reason"],
                              registry=registry)


class ScheduleFirer:
    """Fires every schedule in the bucket; run one per dispatcher (any number at once)."""

    def __init__(self, nc: Client, producer: Producer, registry: CollectorRegistry | None = None,
                 *, create_bucket: bool = True) -> None:
        self._nc = nc
        self._producer = producer
        #: create the schedules' bucket when it is missing (off for a least-privilege dispatcher: it waits for one)
        self._create_bucket = create_bucket
        self.metrics = ScheduleMetrics(registry or CollectorRegistry())
        #: schedule name -> when to look at it next (UTC ns)
        self.wake: dict[str, int] = {}
        self._changed = anyio.Event()
        #: schedules changed since the loop last began looking at them
        self._touched: set[str] = set()

    async def run(self) -> None:
        """Fire until cancelled; survives NATS outages (every step is retried from the stored state)."""
        kv: KeyValue | None = None
        while kv is None:
            try:
                kv = await config_bucket(self._nc, create=self._create_bucket)
            except BucketNotFoundError:
                await anyio.sleep(5.0)  # no schedule was ever added: `jetbridge schedule add` creates the bucket
            except Exception as exc:  # noqa: BLE001 - the server may be restarting: try again
                log.warning("schedule_bucket_unavailable", error=repr(exc))
                await anyio.sleep(1.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow, kv)
            while True:
                now = now_ns()
                for name in [n for n, at in self.wake.items() if at <= now]:
                    self._touched.discard(name)
                    again = await self._process(kv, name)
                    if name in self._touched:  # changed while we looked at it: look again now
                        self.wake[name] = 0
                    elif again is None:
                        self.wake.pop(name, None)  # deleted: the watch brings it back if it is added again
                    else:
                        self.wake[name] = again
                soonest = min(self.wake.values(), default=math.inf)
                delay = min(MAX_SLEEP, max(0.0, (soonest - now_ns()) / NS))
                self._changed = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._changed.wait()

    def _touch(self, name: str) -> None:
        self.wake[name] = 0
        self._touched.add(name)
        self._changed.set()

    async def _follow(self, kv: KeyValue) -> None:
        """Keep :attr:`wake` to the set of schedules: a watch for changes, a full listing every few seconds."""
        while True:
            watcher: Any = None
            try:
                listed = set(await schedule_names(kv))
            except Exception:  # noqa: BLE001 - transport errors: next round
                listed = set()
            for name in listed - set(self.wake):
                self._touch(name)
            try:
                watcher = await kv.watch(f"{DEF_PREFIX}.*", meta_only=True)
                with anyio.move_on_after(RESYNC_EVERY):
                    async for entry in watcher:
                        if entry is not None:
                            self._touch(entry.key.split(".", 1)[1])
            except Exception as exc:  # noqa: BLE001 - resubscribe after outages
                log.debug("schedule_watch_failed", error=repr(exc))
                await anyio.sleep(1.0)
            finally:
                if watcher is not None:
                    try:
                        await watcher.stop()
                    except Exception:  # noqa: BLE001
                        pass

    async def _process(self, kv: KeyValue, name: str) -> int | None:
        """Carry out the schedule's due steps; returns when to look again (None: it was deleted)."""
        try:
            for _ in range(1000):
                step = await self._step(kv, name)
                if step is None:
                    return now_ns() + 1 * NS
                if step.kind is StepKind.WAIT:
                    return step.at
                if step.kind is StepKind.PAUSED:
                    return now_ns() + 5 * NS
        except _MISSING:
            return None
        except Exception as exc:  # noqa: BLE001 - NATS down or restarting: the stored state lets us resume
            log.warning("schedule_step_failed", schedule=name, error=repr(exc), hint="trying again in 1s")
            return now_ns() + 1 * NS
        return now_ns()

    async def _step(self, kv: KeyValue, name: str) -> Step | None:
        """One decision, recorded; None when another dispatcher recorded one first (look again soon)."""
        entry = await kv.get(def_key(name))
        if entry.value is None:
            raise KeyNotFoundError
        try:
            doc = decode_doc(entry.value)
            doc.spec  # noqa: B018 - parse now: a bad schedule text is logged, not fired
        except (msgspec.DecodeError, ValueError, JetbridgeError) as exc:
            log.error("schedule_invalid", schedule=name, error=str(exc), hint="fix it with `jetbridge schedule add`")
            return Step(StepKind.PAUSED)
        try:
            state_entry = await kv.get(state_key(name))
            state, revision = decode_state(state_entry.value), state_entry.revision
        except _MISSING:
            state, revision = ScheduleState(), None
        running = needs_previous(doc, state) and await self._running(state.last_task)
        now = now_ns()
        step = next_step(doc, state, now, running)
        if step.kind in (StepKind.WAIT, StepKind.PAUSED):
            return step
        task_id = ""
        if step.kind in (StepKind.SKIP, StepKind.BUFFER, StepKind.MISS):
            first = step.first or step.slot
            if await self._exists(slot_task_id(name, first)):  # a firer died after creating it: it fired
                step = Step(StepKind.FIRE, slot=first)
        if step.kind in (StepKind.FIRE, StepKind.FIRE_BUFFERED):
            task_id = slot_task_id(name, step.slot)
            await self._fire(doc, task_id)
        new = apply_step(doc, state, step, now, task_id)
        try:
            if revision is None:
                await kv.create(state_key(name), _json.encode(new))
            else:
                await kv.update(state_key(name), _json.encode(new), last=revision)
        except KeyWrongLastSequenceError:
            return None  # another dispatcher recorded this decision
        self._count(doc, step, task_id, now)
        return step

    async def _fire(self, doc: ScheduleDoc, task_id: str) -> None:
        try:
            await fire(self._producer, doc, task_id)
        except (TaskNotFoundError, JetbridgeError) as exc:
            if "not enqueued" not in str(exc):
                raise
            # the task exists, marked queue_error with the reason: the slot fired, its task failed
            log.error("schedule_queue_failed", schedule=doc.name, task_id=task_id, queue=doc.queue, error=str(exc))

    def _count(self, doc: ScheduleDoc, step: Step, task_id: str, now: int) -> None:
        lateness = (now - step.slot) / NS
        if step.kind in (StepKind.FIRE, StepKind.FIRE_BUFFERED):
            self.metrics.fires.labels(schedule=doc.name).inc()
            log.info("schedule_fired", schedule=doc.name, task_id=task_id, queue=doc.queue, type=doc.task_type,
                     late_s=round(lateness, 3))
        elif step.kind is StepKind.MISS:
            self.metrics.missed.labels(schedule=doc.name, reason="catchup").inc(step.count)
            log.warning("schedule_missed", schedule=doc.name, slots=step.count, queue=doc.queue, type=doc.task_type,
                        hint=f"older than the catch-up window ({doc.catchup_ns / NS:g}s): no dispatcher ran then")
        elif step.kind is StepKind.SKIP:
            self.metrics.missed.labels(schedule=doc.name, reason="overlap").inc()
            log.info("schedule_skipped", schedule=doc.name, queue=doc.queue, type=doc.task_type,
                     reason="the previous task is unfinished (overlap policy)")

    async def _exists(self, task_id: str) -> bool:
        try:
            await self._producer._store.load_raw(task_id)
        except TaskNotFoundError:
            return False
        return True

    async def _running(self, task_id: str) -> bool:
        try:
            task, _ = await self._producer._store.load(task_id)
        except TaskNotFoundError:
            return False
        return not task.task_state.terminal


async def run_schedules(dispatcher: Any) -> None:
    """Start the firing loop for a :class:`bridge.dispatcher.Dispatcher` (one line in its ``run``)."""
    from jetbridge.internal import Signer

    if not dispatcher.settings.fire_schedules:
        return
    seed = dispatcher.settings.signing_seed
    producer = Producer(dispatcher.nc, signer=Signer(seed) if seed else None)
    try:
        await ScheduleFirer(dispatcher.nc, producer, dispatcher.metrics.registry,
                            create_bucket=dispatcher.settings.create_queues).run()
    finally:
        with anyio.CancelScope(shield=True):
            await producer.close()
