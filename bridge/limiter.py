"""The dispatcher's side of global limits: admit a task before its attempt starts, or make it wait for free.

:meth:`Limiter.admit` runs after the task is read and before it is claimed (saved ``active``), so a task that must
wait has spent no attempt and written nothing. It then waits in one of two ways:

- **held**: the work item stays with this dispatcher (the keeper keeps its ack wait fresh with ``+WPI`` as for any
  item in progress) but no longer counts against the queue's slots (``QueueWorker.waiting``), so other types keep
  flowing. Waiters of one set of limits queue behind one lock: only the first is awake, and it sleeps until a
  permit is released (seen by the KV watch, or by this dispatcher), a permit's lease runs out, or the rate bucket's
  computed time comes; no polling.
- **rescheduled**: beyond :func:`bridge.limits.hold_cap` waiters per limit, the item is acked and put back on the
  queue later through the retry schedule stream (the same crash-safe path retries take: ack only after the
  schedule's PubAck), at about the time its turn comes. It then holds nothing, not even a server-side ack slot.

On shutdown every held item is handed back at once (NAK), so another dispatcher takes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import structlog
from jetbridge.internal import Requester, TaskRecord, now_ns
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge, Histogram

from .limit_store import BUCKET, Held, LimitKV, LimitMirror, open_bucket
from .limits import OVERLOAD_CODES, LimitSpec, hold_cap, matching, next_expiry, overflow_delay, permit_expiry
from .logs import RateLimitedLog
from .states import AttemptOutcome, ItemAction

if TYPE_CHECKING:
    from .metrics import Metrics
    from .settle import Settler
    from .worker import QueueWorker

log = structlog.get_logger("jetbridge.limits")
_NS = 1e9
#: the longest a waiting head sleeps without news (a missed watch update costs at most this)
_MAX_NAP = 2.0


class Admission:
    """Permits held for one task; give them back with :meth:`release` once its attempt has ended."""

    __slots__ = ("_limiter", "permits", "gate", "since")

    def __init__(self, limiter: Limiter | None, permits: list[Held], gate: _Gate | None = None) -> None:
        self._limiter = limiter
        self.permits = permits
        self.gate = gate
        self.since = time.monotonic()

    def still_held(self) -> bool:
        """Whether every permit is surely still this dispatcher's, judged by its own clock: not found lost, and
        renewed within its expiry less one lease. Asked right before an attempt is sent: a dispatcher paused after
        taking its permits (SIGSTOP, a VM pause) may wake after they expired and were taken over; its renewals only
        find that out on their next round, 0.2 s later, by which time the attempt would be running beside the new
        holder's. The monotonic clock counts the pause."""
        if not self.permits:
            return True
        now = time.monotonic()
        return all(not held.lost and now - held.renewed < permit_expiry(held.lease) - held.lease
                   for held in self.permits)

    async def release(self) -> None:
        if self.gate is not None:
            self.gate.held_for(time.monotonic() - self.since)
        if self._limiter is not None and self.permits:
            permits, self.permits = self.permits, []
            await self._limiter.give_back(permits)


#: the admission of a task no limit applies to (nothing to give back)
FREE = Admission(None, [])


@dataclass(eq=False)
class _Gate:
    """The waiters for one set of limits: a FIFO lock (only its holder waits for capacity) and a wake-up event."""

    specs: list[LimitSpec]
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    changed: anyio.Event = field(default_factory=anyio.Event)
    waiting: int = 0
    #: (monotonic) when the last item rescheduled from here is due: the next one is spaced after it
    overflow_until: float = 0.0
    #: how long an admitted task holds its permits, on average (what a waiting item's turn is estimated from)
    hold: float = 1.0

    def held_for(self, seconds: float) -> None:
        self.hold += (seconds - self.hold) * 0.1

    def per_item(self) -> float:
        """About how long each task waiting here takes to get its turn."""
        return max(1.0 / s.rate if s.rate else self.hold / s.concurrency for s in self.specs)

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class LimitMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.throttled = Gauge("jetbridge_throttled_tasks", "Tasks waiting for a global limit now (held here)",
                               ["queue", "type"], registry=r)
        self.throttles = Counter("jetbridge_throttles", "Tasks that had to wait for a global limit, by how they waited "
                                 "(held, rescheduled)", ["queue", "type", "how"], registry=r)
        self.wait = Histogram("jetbridge_throttle_wait_seconds", "How long held tasks waited for a global limit",
                              ["queue", "type"], registry=r)
        self.limit = Gauge("jetbridge_limit", "Global limits in force: concurrency, rate (per second) and burst",
                           ["limit", "setting"], registry=r)
        self.rate_factor = Gauge("jetbridge_limit_rate_factor", "Share of its rate an adaptive limit allows after "
                                 "handlers pushed back (1: full rate)", ["limit"], registry=r)
        self.lost = Counter("jetbridge_limit_permits_lost", "Permits that expired while their attempt ran (the "
                            "attempt is stopped)", [], registry=r)


class Limiter:
    """Admits tasks under the global limits in force (see the module doc)."""

    def __init__(self, nc: Client, dispatcher_id: str, metrics: Metrics, settler: Settler, *,
                 on_lost: Callable[[str], None], replicas: int = 1, requester: Requester | None = None) -> None:
        self._nc = nc
        self._id = dispatcher_id
        self._settler = settler
        self._on_lost = on_lost
        self._replicas = replicas
        self._rq = requester
        self.metrics = LimitMetrics(metrics)
        self.mirror = LimitMirror()
        self._kv: LimitKV | None = None
        self._gates: dict[tuple[str, ...], _Gate] = {}
        self._by_limit: dict[str, list[_Gate]] = {}
        self._matches: dict[tuple[str, str], list[LimitSpec]] = {}
        self._matches_version = -1
        #: permits held by admissions here, until given back (a lost one too: see _renewer)
        self._held: set[Held] = set()
        self._closing = False
        self._ready = anyio.Event()
        #: one info line every 10 s while tasks wait for limits (each task is logged at debug)
        self._throttling = RateLimitedLog(log, "tasks_throttled", every=10.0)
        #: while the bucket cannot be written every held permit fails every round (0.2 s): one line a second
        self._renew_failed = RateLimitedLog(log, "limit_renew_failed")

    async def run(self) -> None:
        """Follow the bucket and renew held permits until cancelled (run in the dispatcher's task group).

        Until someone sets a limit the bucket does not exist: it is looked for every second. A dispatcher that may
        not read it (narrow permissions) says so once and runs without limits.
        """
        warned = False
        while True:
            try:
                kv = await open_bucket(self._nc, create=False)
            except Exception as exc:  # noqa: BLE001 - no permission, no JetStream: run without limits, say so
                if not warned:
                    warned = True
                    log.warning("limits_unavailable", bucket=BUCKET, error=repr(exc),
                                hint="global limits (jetbridge limit ...) are not applied by this dispatcher; "
                                     "see docs/flow-control.md for the permissions it needs")
                self._ready.set()
                await anyio.sleep(30)
                continue
            if kv is None:
                self._ready.set()
                await anyio.sleep(1.0)
                continue
            self._kv = LimitKV(kv, self.mirror, self._id, now_ns, self._rq)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._renewer)
                    await self._watch(kv)
            except Exception as exc:  # noqa: BLE001 - the watch broke (bucket deleted, server gone): start over
                if not self._ready.is_set():  # never followed: serve without limits rather than not at all
                    log.error("limits_unavailable", bucket=BUCKET, error=repr(exc),
                              hint="the limits bucket exists but cannot be followed (permissions?): this "
                                   "dispatcher runs WITHOUT global limits until it can")
                    self._ready.set()
                else:
                    log.warning("limits_watch_failed", error=repr(exc), hint="following the limits again in 1s")
            await anyio.sleep(1.0)

    async def wait_ready(self) -> None:
        """Until the mirror holds the bucket's contents (limits in force from the first item on)."""
        await self._ready.wait()

    async def _watch(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # the end of the initial values
                    self._ready.set()
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                spec_id = self.mirror.apply(entry.key, None if deleted else entry.value, entry.revision or 0)
                if spec_id is None:
                    continue
                if entry.key.startswith("def."):
                    self._limit_changed(spec_id)
                for gate in self._by_limit.get(spec_id, ()):
                    gate.wake()
        finally:
            self._ready.set()
            with anyio.CancelScope(shield=True):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _limit_changed(self, spec_id: str) -> None:
        spec = self.mirror.specs.get(spec_id)
        for setting in ("concurrency", "rate", "burst"):
            child = self.metrics.limit.labels(spec_id, setting)
            child.set(getattr(spec, setting) if spec is not None else 0)
        log.info("limit_changed", limit=spec.describe() if spec else spec_id, concurrency=spec and spec.concurrency,
                 rate_per_s=spec and spec.rate, burst=spec and spec.burst, removed=spec is None)

    def close(self) -> None:
        """Shutting down: every held item is handed back."""
        self._closing = True
        for gate in self._gates.values():
            gate.wake()

    def _applying(self, queue: str, task_type: str) -> list[LimitSpec]:
        if self._matches_version != self.mirror.version:
            self._matches.clear()
            self._matches_version = self.mirror.version
        key = (queue, task_type)
        found = self._matches.get(key)
        if found is None:
            found = self._matches[key] = matching(list(self.mirror.specs.values()), queue, task_type)
        return found

    async def observe(self, queue: str, task_type: str, outcome: AttemptOutcome) -> None:
        """After an attempt: a ``retry`` reply whose code says the handler is overloaded (``rate_limited``,
        ``overloaded``, ``429``...) halves the rate of the adaptive limits on the task, for every dispatcher."""
        if outcome.kind != "retry" or not self.mirror.specs or outcome.error_code.lower() not in OVERLOAD_CODES:
            return
        for spec in self._applying(queue, task_type):
            if not (spec.adaptive and spec.rate) or self._kv is None:
                continue
            try:
                factor = await self._kv.push_back(spec)
            except Exception as exc:  # noqa: BLE001 - the push-back is advice; the next one tries again
                log.warning("limit_push_back_failed", limit=spec.describe(), error=repr(exc))
                continue
            if factor is not None:
                self.metrics.rate_factor.labels(spec.id).set(factor)
                log.warning("limit_rate_lowered", limit=spec.describe(), queue=queue, type=task_type,
                            code=outcome.error_code, rate_per_s=round(spec.rate * factor, 3),
                            hint="a handler replied that it is overloaded; the rate climbs back over the next "
                                 "seconds unless it says so again")

    async def admit(self, worker: QueueWorker, msg: Msg, task: TaskRecord) -> Admission | None:
        """The permits ``task`` may run its attempt under, after waiting for them if need be; None when the item
        was handed back instead (rescheduled, or the dispatcher is stopping)."""
        specs = self._applying(worker.name, task.type) if self.mirror.specs else []
        if not specs or task.task_state.terminal:
            return FREE
        ids = tuple(s.id for s in specs)
        gate = self._gates.get(ids)
        if gate is None or gate.specs != specs:
            gate = self._gates[ids] = _Gate(specs)
            for spec_id in ids:
                self._by_limit.setdefault(spec_id, []).append(gate)
        if not gate.lock.locked():
            admission, _ = await self._try(gate, gate.specs, task.id, worker.config.lease)
            if admission is not None:
                return admission
        return await self._wait(worker, msg, task, gate)

    async def _wait(self, worker: QueueWorker, msg: Msg, task: TaskRecord, gate: _Gate) -> Admission | None:
        assert msg.reply
        cap = min(hold_cap(s) for s in gate.specs)
        if gate.waiting >= min(cap, worker.capacity):
            per_item = gate.per_item()
            now = time.monotonic()
            delay = overflow_delay(max(gate.waiting, round((gate.overflow_until - now) / per_item)), per_item)
            gate.overflow_until = now + delay
            self.metrics.throttles.labels(worker.name, task.type, "rescheduled").inc()
            self._throttling.info(queue=worker.name, type=task.type, waiting_here=gate.waiting,
                                  limit=", ".join(sp.describe() for sp in gate.specs), rescheduled_s=round(delay, 1),
                                  hint="more tasks wait for a global limit than are held here: the rest are put "
                                       "back on the queue for later (no attempt spent)")
            log.debug("task_throttled", task_id=task.id, queue=worker.name, type=task.type, how="rescheduled",
                      delay_s=round(delay, 3))
            await self._settler.item([msg.reply], ItemAction.SCHEDULE, delay=delay, queue=worker.name,
                                     task_id=task.id)
            return None
        self.metrics.throttles.labels(worker.name, task.type, "held").inc()
        self._throttling.info(queue=worker.name, type=task.type, limit=", ".join(sp.describe() for sp in gate.specs),
                              waiting_here=gate.waiting + 1,
                              hint="tasks wait for a global limit (no attempt spent); see `jetbridge limit list`")
        throttled = self.metrics.throttled.labels(worker.name, task.type)
        throttled.inc()
        gate.waiting += 1
        worker.waiting += 1
        worker.slot_freed()
        started = time.monotonic()
        try:
            async with gate.lock:
                while not self._closing:
                    specs = self._applying(worker.name, task.type)  # the limits may have changed while it waited
                    if not specs:
                        return FREE
                    admission, wait = await self._try(gate, specs, task.id, worker.config.lease)
                    if admission is not None:
                        self.metrics.wait.labels(worker.name, task.type).observe(time.monotonic() - started)
                        return admission
                    changed = gate.changed
                    with anyio.move_on_after(min(wait, _MAX_NAP)):
                        await changed.wait()
        finally:
            gate.waiting -= 1
            worker.waiting -= 1
            throttled.dec()
        await self._settler.item([msg.reply], ItemAction.NAK)
        return None

    async def _try(self, gate: _Gate, specs: list[LimitSpec], task_id: str,
                   lease: float) -> tuple[Admission | None, float]:
        """Take every permit and token ``task_id`` needs, or none: (admission, 0) or (None, seconds to wait)."""
        kv = self._kv
        if kv is None:  # the bucket is not open yet: admit rather than stall (limits apply once it is)
            return FREE, 0.0
        taken: list[Held] = []
        try:
            return await self._take(kv, gate, specs, task_id, lease, taken)
        except Exception as exc:  # noqa: BLE001 - the bucket is unreachable for now: wait, never run over a limit
            log.warning("limit_check_failed", task_id=task_id, error=repr(exc), hint="trying again in 1s")
            with anyio.CancelScope(shield=True):
                await self.give_back(taken)
            return None, 1.0

    async def _take(self, kv: LimitKV, gate: _Gate, specs: list[LimitSpec], task_id: str, lease: float,
                    taken: list[Held]) -> tuple[Admission | None, float]:
        for spec in specs:
            if spec.concurrency:
                held = await kv.take_permit(spec, task_id, lease, time.monotonic())
                if held is None:
                    await self.give_back(taken)
                    expiry = next_expiry(self.mirror.permits.get(spec.id, {}), spec.concurrency, now_ns())
                    return None, (expiry / _NS + 0.01) if expiry is not None else _MAX_NAP
                taken.append(held)
        for spec in specs:
            if spec.rate:
                wait_ns = await kv.take_token(spec)
                if wait_ns:
                    await self.give_back(taken)
                    return None, wait_ns / _NS
        self._held.update(taken)
        return Admission(self, taken, gate), 0.0

    async def give_back(self, permits: list[Held]) -> None:
        assert self._kv is not None or not permits
        for held in permits:
            self._held.discard(held)
            try:
                await self._kv.release(held)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - unreleased, it expires with its lease
                log.warning("limit_release_failed", permit=held.key, error=repr(exc),
                            hint="the permit comes free when its lease runs out")
        for spec_id in {h.key.split(".")[1] for h in permits}:
            for gate in self._by_limit.get(spec_id, ()):
                gate.wake()

    async def _renewer(self) -> None:
        """Renew every held permit a third of its lease after the last renewal; a lost one stops its attempt.

        A permit can be lost before its attempt has started: the dispatcher was paused after taking it and before
        sending the request. The stop then finds no attempt to stop, and the attempt, sent on waking, would run its
        whole length without a permit, next to the one that took the slot over. So a lost permit stays listed and
        its stop is repeated every round (0.2 s) until the admission gives it back (the attempt's outcome is
        saved): an attempt started late is stopped within a round; stopping one that has ended does nothing.
        """
        while True:
            await anyio.sleep(0.2)
            assert self._kv is not None
            now = time.monotonic()
            for held in list(self._held):
                if held.lost:
                    self._on_lost(held.task)
                    continue
                if now - held.renewed < held.lease / 3 or held not in self._held:
                    continue
                try:
                    renewed = await self._kv.renew(held, now)
                except Exception as exc:  # noqa: BLE001 - try again on the next round, well within the expiry
                    self._renew_failed.warning(permit=held.key, task_id=held.task, error=repr(exc),
                                               hint="tried again every 0.2 s; the permit expires "
                                                    f"{permit_expiry(held.lease):g}s after its last renewal")
                    continue
                if not renewed:
                    self.metrics.lost.inc()
                    log.warning("limit_permit_lost", task_id=held.task, permit=held.key,
                                hint="the permit expired (this dispatcher was paused or cut off?) and was taken: "
                                     "the attempt is stopped")
                    self._on_lost(held.task)
