"""The dispatcher: pulls work items, runs attempts on handlers, and carries out the state machine's decisions.

One :class:`QueueWorker` per queue pulls items into a shared task group. For each item the dispatcher loads
the task, asks :mod:`bridge.states` what to do, saves the result with a compare-and-set, and only then touches
the work item. The rules that keep tasks from being lost or stuck live in two places: :mod:`bridge.states`
decides, and :meth:`Dispatcher._finish` never acknowledges an item whose save did not land.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus
from jetbridge.internal import (
    NS,
    ConfigError,
    ConflictError,
    CorruptTaskError,
    InFlight,
    JetStreamError,
    QueueNotFoundError,
    Requester,
    TaskNotFoundError,
    TaskRecord,
    TaskState,
    TaskStore,
    TransportError,
    decode_task,
    js_publish,
    names,
    now_ns,
)
from nats.aio.client import Client
from nats.aio.msg import Msg

from .announce import announce
from .attempts import Attempt, AttemptRunner
from .history import record_attempt
from .hooks import load_hooks
from .limiter import Admission, Limiter
from .logs import RateLimitedLog
from .metrics import Metrics
from .policy import parse_policy
from .presence import HandlerPresence, probe_delay
from .priorities import priority_pool
from .puller import Puller
from .queue_watch import warn_if_asyncjobs, watch_queues
from .queues import QueueAdmin, QueueConfig
from .retries import MOVER_CONSUMER, Mover, RetryScheduler
from .routes import Router
from .scheduler import run_schedules
from .settings import Settings
from .settle import Settler
from .spawn import Spawner
from .states import (
    Decision,
    Dependencies,
    ItemAction,
    Limits,
    apply,
    max_attempts,
    on_delivery,
    on_outcome,
    waiting_for_handler,
)
from .takeover import Claims, Takeover, Verdict
from .tracing import DispatchTracing
from .worker import QueueWorker, check_document, decode_item

log = structlog.get_logger("jetbridge.dispatcher")

#: seconds before an item whose ``active`` save the store refused (full, no leader) is delivered again
CLAIM_RETRY = 1.0


class Dispatcher:
    """Runs attempts for the tasks on its queues until :meth:`stop`.

    Args:
        nc: a connected nats-py client (the dispatcher does not own it).
        settings: see :class:`bridge.settings.Settings`.
        metrics: where to count; a private registry by default.
    """

    def __init__(self, nc: Client, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.nc = nc
        settings, self.pool = priority_pool(settings, self._on_item)  # --queues A:6,B:1 (bridge/priorities.py)
        self.settings = settings.validate()
        self.metrics = metrics or Metrics()
        self.id = settings.dispatcher_id
        self.router = Router(list(settings.routes), prefix=settings.subject_prefix)
        self._rq = Requester(nc, prefix=f"_INBOX.jetbridge.{self.id}.js")
        self.admin = QueueAdmin(self._rq, replicas=settings.store_replicas)
        self.store = TaskStore(self._rq)
        self.scheduler = RetryScheduler(self._rq)
        self.settler = Settler(nc, self.store, self.scheduler, self.metrics)
        #: dispatcher hooks (bridge/hooks.py); None when none are configured: then they cost nothing per task
        self.hooks = self.settler.hooks = load_hooks(settings.hooks, dispatcher_id=self.id,
                                                     timeout=settings.hook_timeout, registry=self.metrics.registry)
        self.runner = AttemptRunner(nc, dispatcher_id=self.id, metrics=self.metrics,
                                    first_contact_grace=settings.first_contact_grace)
        #: tasks this dispatcher saved active whose attempt is not registered yet (an item for one waits a moment)
        self.claims = Claims()
        self.takeover = Takeover(nc, self.id, self.runner.attempt_for, self.claims)
        self.presence = HandlerPresence(self._rq, self.metrics)
        self._foreign_items = RateLimitedLog(log, "foreign_work_item")
        self._claim_failures = RateLimitedLog(log, "task_save_failed")
        self._mover = Mover(nc, self._rq)
        #: global limits per task type and queue (bridge/limiter.py, docs/flow-control.md)
        self.limiter = Limiter(nc, self.id, self.metrics, self.settler, on_lost=self._permit_lost, requester=self._rq)
        self.workers: dict[str, QueueWorker] = {}
        self._tg: TaskGroup | None = None
        #: one task per work item (cheaper than the task group's start_soon; see bridge/spawn.py)
        self._items = Spawner()
        self._stop = anyio.Event()
        #: set once :meth:`run` has drained and returned
        self.stopped = anyio.Event()
        self.busy = InFlight()
        self._verifier: Any = None
        self.ready = False
        #: OpenTelemetry spans when the OTEL_* variables ask for them (bridge/tracing.py); None: no per-task work
        self.tracing = DispatchTracing.from_env()

    # Life cycle -----------------------------------------------------------------------------------------------

    async def _setup(self) -> None:
        await self._rq.start()
        store_config = await self.admin.ensure_stores()
        self.store.direct = bool(store_config.get("allow_direct"))
        self.confirm_reads = self.store.direct and int(store_config.get("num_replicas") or 1) > 1
        self.settler.ttl_ok = bool(store_config.get("allow_msg_ttl"))
        self.settler.retain_finished = self.settings.retain_finished
        if self.settings.retain_finished and not self.settler.ttl_ok:
            log.warning("retention_unavailable", stream=names.TASKS_STREAM,
                        hint="the task store was created without allow_msg_ttl (by asyncjobs?); finished tasks are kept")
        await self.scheduler.ensure_mover_consumer()
        await self.runner.start()
        await self.takeover.start()
        if self.settings.verify_key:
            from jetbridge.internal import Verifier

            self._verifier = Verifier(self.settings.verify_key, optional=self.settings.signatures_optional)
        queue_names = list(self.settings.queues)
        if "*" in queue_names:
            queue_names = sorted(set(await self.admin.names()) | {q for q in queue_names if q != "*"})
        for name in queue_names:
            try:
                config = await self.admin.get(name)
            except QueueNotFoundError:
                if not self.settings.create_queues:
                    raise ConfigError(f"queue {name} does not exist and create_queues is off: "
                                      f"create it with `jetbridge queue add {name}`") from None
                config = await self.admin.add(QueueConfig(name=name, replicas=self.settings.store_replicas))
                log.info("queue_created", queue=name)
            warn_if_asyncjobs(config)
            self.workers[name] = QueueWorker(config=config, limits=self._limits(config), capacity=self._capacity(config))
        await self.nc.subscribe(names.CONTROL_CANCEL_SUBJECT, cb=self._on_control_cancel)

    @property
    def confirm_reads(self) -> bool:
        """Confirm with the stream leader (``STREAM.MSG.GET``) before a direct read may drop a work item or a save
        is judged; on when the task store is replicated, where a direct get may be answered by a replica that is
        behind. Kept by the :class:`Settler`, which reads the same way."""
        return self.settler.confirm_reads

    @confirm_reads.setter
    def confirm_reads(self, on: bool) -> None:
        self.settler.confirm_reads = on

    def _limits(self, config: QueueConfig) -> Limits:
        return Limits(queue_max_tries=config.max_tries, policy=parse_policy(config.retry),
                      no_handler_delay=self.settings.no_handler_delay)

    def _capacity(self, config: QueueConfig) -> int:
        if self.pool is not None:  # the pool caps the total; a queue may buffer up to its max_concurrent
            return config.max_concurrent
        return min(self.settings.concurrency, config.max_concurrent)

    def serve_queue(self, config: QueueConfig) -> QueueWorker:
        """Start serving a queue (at start-up, or one created while running)."""
        worker = QueueWorker(config=config, limits=self._limits(config), capacity=self._capacity(config))
        self.workers[config.name] = worker
        if self._tg is not None:
            self._start_worker(self._tg, worker)
        return worker

    def apply_queue_config(self, worker: QueueWorker, config: QueueConfig) -> None:
        """Use a queue's changed settings from now on (running attempts keep the ones they started with)."""
        worker.config, worker.limits, worker.capacity = config, self._limits(config), self._capacity(config)
        if worker.puller is not None:
            worker.puller.poke()

    def _start_worker(self, tg: TaskGroup, worker: QueueWorker) -> None:
        intake, free = functools.partial(self._on_item, worker), worker.free_slots
        if self.pool is not None:
            self.pool.attach(worker)
            intake, free = functools.partial(self.pool.offer, worker), functools.partial(self.pool.free_for, worker)
        worker.puller = Puller(self.nc, names.queue_stream(worker.name), names.QUEUE_CONSUMER, intake, free)
        tg.start_soon(worker.puller.run)
        tg.start_soon(self._keeper, worker)

    async def run(self, *, task_status: TaskStatus[Dispatcher] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`stop`, then drain: finish running attempts or hand them back."""
        await self._setup()
        mover = Puller(self.nc, names.SCHEDULE_STREAM, MOVER_CONSUMER, self._on_due, lambda: 1000)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self.limiter.run)
            await self.limiter.wait_ready()
            for worker in list(self.workers.values()):
                self._start_worker(tg, worker)
            tg.start_soon(mover.run)
            tg.start_soon(announce, self)  # a micro service `jetbridge info` finds (bridge/announce.py)
            tg.start_soon(run_schedules, self)  # cron schedules: every dispatcher fires them (bridge/scheduler.py)
            if self.hooks is not None:
                tg.start_soon(self.hooks.run)
            if self.settings.queue_refresh_interval:
                tg.start_soon(watch_queues, self, self.settings.queue_refresh_interval)
            if self.settings.reconcile_interval:
                tg.start_soon(self._reconciler)
            self.ready = True
            self.metrics.ready.set(1)
            log.info("dispatcher_started", dispatcher=self.id, queues=list(self.workers))
            task_status.started(self)
            await self._stop.wait()
            self.ready = False
            self.metrics.ready.set(0)
            self.limiter.close()
            for worker in self.workers.values():
                assert worker.puller is not None
                worker.puller.stop()
                if self.pool is not None:  # buffered, never started: handed back at once
                    await self.settler.item([m.reply for m in self.pool.drop(worker) if m.reply], ItemAction.NAK)
            mover.stop()
            await self._drain()
            await self._items.cancel_all()
            if self.hooks is not None:
                await self.hooks.close()  # queued hook calls get hook_timeout to finish
            tg.cancel_scope.cancel()
        await self.takeover.close()
        await self.runner.close()
        await self._rq.close()
        log.info("dispatcher_stopped", dispatcher=self.id)
        self.stopped.set()

    def stop(self) -> None:
        """Stop taking work and drain (safe to call from a signal handler in the event loop)."""
        self._stop.set()

    async def _drain(self) -> None:
        grace = self.settings.shutdown_grace
        log.info("draining", in_flight=self.busy.count, grace_s=grace)
        with anyio.move_on_after(grace):
            await self.busy.wait_idle()
        if self.busy.count:
            for attempt in list(self.runner.running.values()):
                self.runner.abort(attempt, "shutdown", "dispatcher shutting down: attempt handed back")
            with anyio.move_on_after(10):
                await self.busy.wait_idle()
        if self.busy.count:
            log.warning("drain_incomplete", in_flight=self.busy.count,
                        hint="their work items are redelivered after the queue's lease")

    # Intake ---------------------------------------------------------------------------------------------------

    def _on_item(self, worker: QueueWorker, msg: Msg) -> None:
        assert self._tg is not None and msg.reply
        worker.inflight[msg.reply] = time.monotonic()
        self.busy.enter()
        self.metrics.in_flight.inc(worker.name)
        self._items.spawn(self._process(worker, msg))

    def _on_due(self, msg: Msg) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._mover.move, msg)

    async def _process(self, worker: QueueWorker, msg: Msg) -> None:
        try:
            await self._handle(worker, msg)
        except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the dispatcher
            log.exception("dispatch_failed", queue=worker.name, error=repr(exc),
                          hint="the work item is redelivered after the queue's lease")
        finally:
            assert msg.reply
            worker.inflight.pop(msg.reply, None)
            self.metrics.in_flight.dec(worker.name)
            self.busy.leave()
            if worker.pool is not None:
                worker.pool.done(worker)
            if worker.puller is not None:
                worker.puller.poke()

    async def _handle(self, worker: QueueWorker, msg: Msg) -> None:
        assert msg.reply
        try:
            task_id = decode_item(msg.data)
        except ValueError as exc:
            self.metrics.dropped_items.labels(queue=worker.name, reason="corrupt_item").inc()
            log.warning("corrupt_work_item", queue=worker.name, error=str(exc), data=msg.data[:200].decode(errors="replace"))
            await self.settler.item([msg.reply], ItemAction.TERM, reason="corrupt work item")
            return
        if msg.subject != names.queue_subject(worker.name, task_id):
            await self._drop_foreign(worker, msg, task_id, f"item on subject {msg.subject} names task {task_id}")
            return
        loaded = await self._read_task(worker, msg, task_id)
        if loaded is None:
            return
        task, seq = loaded
        if task.queue != worker.name and not self._signature_problem(task):
            await self._drop_foreign(worker, msg, task_id, f"the task belongs to queue {task.queue}")
            return
        admission = await self.limiter.admit(worker, msg, task)  # global limits: wait here, no attempt spent
        if admission is None:
            return
        try:
            await self._claim_and_run(worker, msg, task, seq, admission)
        finally:
            await admission.release()

    async def _claim_and_run(self, worker: QueueWorker, msg: Msg, task: TaskRecord, seq: int,
                             admission: Admission) -> None:
        claimed = await self._claim(worker, msg, task, seq)
        if claimed is not None:
            active, seq = claimed
            try:
                if self.settings.active_events:
                    await self.settler.event(active)
                self.metrics.tasks.inc(worker.name, active.type, "active")
                if self.hooks is not None:
                    self.hooks.state_changed(worker.name, task, active, "attempt started")
            except BaseException:
                self.claims.end(active.id)
                raise
            await self._run_attempt(worker, msg, active, seq, admission)  # ends the claim once it is registered

    def _permit_lost(self, task_id: str) -> None:
        """A concurrency permit of a running attempt expired and was taken elsewhere: stop the attempt."""
        attempt = self.runner.attempt_for(task_id)
        if attempt is not None:
            self.runner.abort(attempt, "lost", "its concurrency permit expired (was this dispatcher paused?)")

    async def _drop_foreign(self, worker: QueueWorker, msg: Msg, task_id: str, why: str) -> None:
        """An item that does not match its task (forged, or put on the wrong queue): removed, the task untouched."""
        assert msg.reply
        self.metrics.dropped_items.labels(queue=worker.name, reason="foreign_item").inc()
        self._foreign_items.warning(task_id=task_id, queue=worker.name, error=why,
                                    hint="a work item must be on its own task's queue subject; item removed")
        await self.settler.item([msg.reply], ItemAction.TERM, reason="work item does not match its task")
        await self._restore_item(worker, msg.subject)

    async def _restore_item(self, worker: QueueWorker, subject: str) -> None:
        """A forged item published on a task's own subject replaced that task's real item (a queue keeps one per
        subject): put the real one back, so the task is not left waiting for the reconciler."""
        owner = subject.rpartition(".")[2]
        if subject != names.queue_subject(worker.name, owner) or not names.is_valid_name(owner):
            return
        try:
            task, _ = await self.store.load(owner, direct=self.settler.leader())
        except (TaskNotFoundError, CorruptTaskError, TransportError, JetStreamError):
            return
        if task.queue == worker.name and not task.task_state.terminal:
            try:
                await js_publish(self._rq, subject, names.work_item(owner))
            except (JetStreamError, TransportError) as exc:
                log.warning("item_restore_failed", task_id=owner, queue=worker.name, error=str(exc),
                            hint="the reconciler puts it back later")

    async def _read_task(self, worker: QueueWorker, msg: Msg, task_id: str) -> tuple[TaskRecord, int] | None:
        """The item's task and its sequence; None when the item was dealt with (dropped, NAKed, quarantined).

        On a replicated store a direct get (the fast read) may be answered by a replica that is behind the stream
        leader: a task it has not seen yet looks missing, a task retried since it last heard looks final. Both would
        drop the work item of a live task, so before either the leader is asked (``direct=False``).
        """
        for direct in ((None, False) if self.confirm_reads else (None,)):
            unconfirmed = direct is None and self.confirm_reads
            try:
                raw, seq = await self.store.load_raw(task_id, direct=direct)
            except TaskNotFoundError:
                if unconfirmed:
                    continue
                self.metrics.dropped_items.labels(queue=worker.name, reason="task_not_found").inc()
                log.warning("task_not_found", task_id=task_id, queue=worker.name,
                            hint="the work item points at a task that is not in the store; item removed")
                await self.settler.item([msg.reply], ItemAction.TERM, reason="task not found")
                return None
            except (TransportError, JetStreamError) as exc:
                log.warning("task_load_failed", task_id=task_id, queue=worker.name, error=str(exc))
                await self.settler.item([msg.reply], ItemAction.NAK, delay=1.0)
                return None
            try:
                task = decode_task(raw)
                check_document(task, task_id)
            except (msgspec.DecodeError, ValueError) as exc:
                if unconfirmed:
                    continue
                await self.settler.quarantine(worker, msg, task_id, raw, seq, str(exc))
                return None
            if unconfirmed and task.task_state.terminal:
                continue
            return task, seq
        return None

    async def _claim(self, worker: QueueWorker, msg: Msg, task: TaskRecord, seq: int) -> tuple[TaskRecord, int] | None:
        """Save the task ``active`` (the attempt counted) if the state machine says run; else carry out its decision.

        Every version of the task that may be run is checked here, including one re-read after losing a
        compare-and-set: its signature, whether another attempt of it is live, and whether a handler is there.
        """
        assert msg.reply
        items = [msg.reply]
        for _ in range(3):
            problem = self._signature_problem(task)
            if problem and not task.task_state.terminal:
                decision = Decision(ItemAction.ACK, TaskState.TERMINATED, last_err=problem,
                                    last_err_code="signature", reason="signature check failed")
                await self.settler.finish(worker, items, task, seq, decision)
                return None
            if task.task_state is TaskState.ACTIVE:
                verdict, wait = await self.takeover.check(task, worker.name, msg.reply, worker.config.lease)
                self.metrics.takeovers.labels(queue=worker.name, verdict=verdict.value).inc()
                if verdict in (Verdict.WAIT, Verdict.STARTING):
                    await self.settler.item(items, ItemAction.NAK, delay=wait)
                if verdict is not Verdict.TAKE_OVER:
                    return None
            deps = await self._dependencies(task) if task.task_state is TaskState.BLOCKED else None
            decision = on_delivery(task, now_ns(), worker.limits, deps)
            if decision.action is ItemAction.RUN:
                decision = await self._handler_check(worker, msg, task, decision)
            if decision.action is not ItemAction.RUN:
                await self.settler.finish(worker, items, task, seq, decision)
                return None
            active = msgspec.structs.replace(apply(task, decision, now_ns()), dispatcher=self.id)
            self.claims.begin(task.id)  # until its attempt is registered (see _run_attempt)
            try:
                return active, await self.store.save(active, seq)
            except ConflictError:
                self.claims.end(task.id)
                self.metrics.save_conflicts.labels(queue=worker.name).inc()
                task, seq = await self.store.load(task.id, direct=self.settler.leader())  # ours was stale
            except (TransportError, JetStreamError) as exc:  # a full store, no leader: not run, tried again later
                self.claims.end(task.id)
                self.metrics.save_failures.labels(queue=worker.name).inc()
                self._claim_failures.warning(task_id=task.id, queue=worker.name, type=task.type, error=str(exc),
                                             hint=f"not started; tried again in {CLAIM_RETRY} s")
                await self.settler.item(items, ItemAction.NAK, delay=CLAIM_RETRY)
                return None
            except BaseException:
                self.claims.end(task.id)
                raise
        await self.settler.item(items, ItemAction.NAK, delay=0.5)
        return None

    def _signature_problem(self, task: TaskRecord) -> str | None:
        """Why ``task`` fails verification (on a dispatcher that verifies signatures), or None."""
        return self._verifier.problem(task) if self._verifier is not None else None

    async def _handler_check(self, worker: QueueWorker, msg: Msg, task: TaskRecord, run: Decision) -> Decision:
        """``run``, unless the task's handler subject was last seen without a handler and a probe finds none."""
        _, subject = self.router.resolve(task.type)
        if task.task_state is not TaskState.NO_HANDLER and not self.presence.suspect(subject):
            return run
        if await self.presence.probe(subject):
            return run
        deliveries = msg.metadata.num_delivered if task.task_state is TaskState.NO_HANDLER else 1
        delay = probe_delay(worker.limits.no_handler_delay, deliveries or 1)
        message = f"no handler online for task type {task.type} (subject {subject})"
        return waiting_for_handler(task, now_ns(), worker.limits, delay, message)

    async def _dependencies(self, task: TaskRecord) -> Dependencies:
        """Look up a blocked task's parents, as asyncjobs does: all complete, one failed, or still waiting."""
        results: dict[str, Any] = {}
        waiting = 0
        for parent_id in task.dependencies or []:
            try:
                parent, _ = await self.store.load(parent_id)
            except (TaskNotFoundError, CorruptTaskError):
                return Dependencies(failed=f"dependency {parent_id} does not exist")
            state = parent.task_state
            if state is TaskState.COMPLETE:
                results[parent_id] = msgspec.to_builtins(parent.result) if parent.result is not None else None
            elif state.terminal:
                return Dependencies(failed=f"dependency {parent_id} ended {state.value}: {parent.last_err}")
            else:
                waiting += 1
        return Dependencies(waiting=waiting, results=results if task.load_dependencies else None)

    async def _run_attempt(self, worker: QueueWorker, msg: Msg, task: TaskRecord, seq: int,
                           admission: Admission) -> None:
        """Run the attempt of a task this dispatcher has just claimed; ends the claim (see :class:`Claims`)."""
        assert msg.reply
        task_id, claimed, attempt = task.id, True, None
        try:
            route, subject = self.router.resolve(task.type)
            budget = worker.config.max_run_time
            deadline = task.deadline_ns
            if deadline is not None:
                budget = max(0.001, min(budget, (deadline - now_ns()) / NS))
            lease = worker.config.lease if (route.mode == "jetbridge" and route.heartbeats) else None
            attempt = Attempt(task=task, seq=seq, queue=worker.name, route=route, subject=subject, budget=budget,
                              lease=min(lease, budget) if lease is not None else None,
                              max_attempts=max_attempts(task, worker.limits),
                              permitted=admission.still_held if admission.permits else None)
            self.metrics.attempts.inc(worker.name, task.type)
            log.debug("attempt_started", task_id=task.id, queue=worker.name, type=task.type, attempt=task.tries,
                      subject=subject, budget_s=round(budget, 3))
            if self.tracing is not None:
                self.tracing.start(attempt)
            started = time.monotonic()
            self.claims.end(task_id)  # run() registers the attempt before it first awaits: no gap for a duplicate
            claimed = False
            if self.hooks is not None:
                self.hooks.before_attempt(attempt)
            outcome = await self.runner.run(attempt)
            if self.hooks is not None:
                self.hooks.after_attempt(attempt, outcome, time.monotonic() - started)
            await self.limiter.observe(worker.name, task.type, outcome)  # adaptive limits: handlers push back
            self.metrics.attempt_duration.observe(time.monotonic() - started, worker.name, task.type, outcome.kind)
            if outcome.kind == "no_handler":
                self.presence.absent(subject)
            else:
                self.metrics.handler_available.set(1, subject)
            async with attempt.lock:
                task, seq = attempt.task, attempt.seq
                decision = on_outcome(task, outcome, now_ns(), worker.limits)
                task = record_attempt(task, outcome, decision, now_ns=now_ns(), dispatcher=self.id)
                if self.tracing is not None:
                    self.tracing.end(attempt, outcome, decision)
                await self.settler.finish(worker, [msg.reply], task, seq, decision, attempt=attempt)
        finally:
            if claimed:
                self.claims.end(task_id)
            if attempt is not None:
                self.runner.release(attempt)
                if self.tracing is not None:
                    self.tracing.end(attempt, None, None)  # only if it failed before its outcome: never left open

    # Background duties ----------------------------------------------------------------------------------------

    async def _keeper(self, worker: QueueWorker) -> None:
        """Tells the server we still hold our items, and stores handlers' progress; runs a few times per lease."""
        every = max(0.05, min(worker.config.lease / 3, 1.0))
        refresh = worker.config.lease / 3
        while True:
            await anyio.sleep(every)
            now = time.monotonic()
            for reply, told in list(worker.inflight.items()):
                if now - told >= refresh and self.nc.is_connected:
                    worker.inflight[reply] = now
                    await self.nc.publish(reply, b"+WPI")
            for attempt in list(self.runner.running.values()):
                if attempt.queue != worker.name:
                    continue
                if attempt.adopted and not attempt.finished and now - attempt.adopted_told >= refresh:
                    attempt.adopted_told = now
                    for reply in list(attempt.adopted):
                        await self.nc.publish(reply, b"+WPI")
                if attempt.progress_dirty:
                    await self._save_progress(attempt)

    async def _save_progress(self, attempt: Attempt) -> None:
        async with attempt.lock:
            if not attempt.progress_dirty or attempt.token not in self.runner.running:
                return
            attempt.progress_dirty = False
            updated = msgspec.structs.replace(attempt.task, progress=attempt.progress,
                                              progress_message=attempt.progress_message[:1024])
            try:
                attempt.seq = await self.store.save(updated, attempt.seq)
                attempt.task = updated
            except ConflictError:
                self.runner.abort(attempt, "operator", "the task was changed elsewhere while it ran")
                return
            except (TransportError, JetStreamError):
                attempt.progress_dirty = True
                return
            await self.settler.event(updated)

    async def _reconciler(self) -> None:
        """Every ``reconcile_interval``, put orphaned tasks of our queues back on their queue."""
        from .reconcile import reconcile

        while True:
            await anyio.sleep(self.settings.reconcile_interval)
            grace = {w.name: max(60.0, w.config.max_run_time + 2 * w.config.lease) for w in self.workers.values()}
            try:
                await reconcile(self.nc, self._rq, grace)
            except Exception as exc:  # noqa: BLE001 - try again next time
                log.warning("reconcile_failed", error=repr(exc))

    async def _on_control_cancel(self, msg: Msg) -> None:
        try:
            request = msgspec.json.decode(msg.data)
            task_id, reason = request["task_id"], str(request.get("reason", "cancelled by operator"))
        except (msgspec.DecodeError, KeyError, TypeError, RecursionError):
            log.warning("bad_cancel_request", data=msg.data[:200].decode(errors="replace"))
            return
        attempt = self.runner.attempt_for(task_id)
        if attempt is not None:
            log.info("cancelling_attempt", task_id=task_id, queue=attempt.queue, reason=reason)
            self.runner.abort(attempt, "operator", reason)

