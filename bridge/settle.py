"""Carrying out the state machine's decisions: save the task with a compare-and-set, then settle the work items.

The rule that keeps tasks from being lost lives here: a work item is acknowledged, scheduled or put back only after
the save of its task landed (:meth:`Settler.finish`). A save that loses its compare-and-set drops the outcome, since
someone else (an operator, another dispatcher's takeover) changed the task meanwhile.
"""

from __future__ import annotations

import anyio
import msgspec
import structlog
from jetbridge.internal import (
    ConflictError,
    JetStreamError,
    TaskRecord,
    TaskState,
    TaskStore,
    TransportError,
    encode_task,
    format_ns,
    names,
    now_ns,
    publish_fast,
    task_state_event,
)
from nats.aio.client import Client
from nats.aio.msg import Msg

from . import dlq
from .attempts import Attempt
from .hooks import Hooks
from .metrics import Metrics
from .retries import RetryScheduler
from .states import AttemptOutcome, Decision, ItemAction, apply, nak_delay_ns, on_outcome
from .worker import QueueWorker

log = structlog.get_logger("jetbridge.dispatcher")


class Settler:
    """Saves decisions and settles work items for one dispatcher."""

    def __init__(self, nc: Client, store: TaskStore, scheduler: RetryScheduler, metrics: Metrics) -> None:
        self.nc = nc
        self.store = store
        self.scheduler = scheduler
        self.metrics = metrics
        #: how long finished tasks are kept (0: forever), applied only when the store allows per-message TTLs
        self.retain_finished = 0.0
        self.ttl_ok = False
        #: confirm with the stream leader before trusting a read (replicated stores)
        self.confirm_reads = False
        #: dispatcher hooks told of every state saved (None: no hooks, no work)
        self.hooks: Hooks | None = None

    def leader(self) -> bool | None:
        """``direct=`` for a read that must not be stale: the leader on a replicated store, else the default."""
        return False if self.confirm_reads else None

    async def finish(self, worker: QueueWorker, items: list[str], task: TaskRecord, seq: int, decision: Decision,
                      *, attempt: Attempt | None = None) -> None:
        """Save the decision's changes, then (only if the save landed) act on the work items.

        ``attempt``: the attempt whose outcome this is; the items it adopted while running are settled too.
        """
        if decision.saves:
            assert decision.state is not None
            new = apply(task, decision, now_ns())
            data = encode_task(new)
            if decision.state is TaskState.COMPLETE and len(data) > self.nc.max_payload - 512:
                decision = on_outcome(task, self.result_too_large(task, len(data)), now_ns(), worker.limits)
                new = apply(task, decision, now_ns())
                data = encode_task(new)
            assert decision.state is not None
            ttl = self.retain_finished if (decision.state is TaskState.COMPLETE and self.ttl_ok) else None
            if not await self.save(worker, items, new, data, seq, ttl, attempt):
                return
            await self.event(new)
            if self.hooks is not None:
                self.hooks.state_changed(worker.name, task, new, decision.reason)
            await dlq.announce(self.nc, self.metrics.registry, new)
            self.metrics.tasks.inc(worker.name, new.type, new.state)
            if decision.state is TaskState.RETRY:
                self.metrics.retries.inc(worker.name, new.type)
            level = "debug" if decision.state in (TaskState.COMPLETE, TaskState.RETRY) else "info"
            getattr(log, level)("task_state", task_id=new.id, queue=worker.name, type=new.type, attempt=new.tries,
                                from_state=task.state, to_state=new.state, reason=decision.reason,
                                last_err=new.last_err or None, delay_s=round(decision.delay, 3) if decision.delay else None)
        await self.item(self.settle(items, attempt), decision.action, delay=decision.delay, queue=worker.name,
                         task_id=task.id)

    @staticmethod
    def settle(items: list[str], attempt: Attempt | None) -> list[str]:
        """The items to act on: ``items`` and, for an attempt's outcome, what it adopted (no more from now on)."""
        if attempt is None:
            return items
        attempt.finished = True
        return items + [r for r in attempt.adopted if r not in items]

    def result_too_large(self, task: TaskRecord, size: int) -> AttemptOutcome:
        limit = self.nc.max_payload - 512
        return AttemptOutcome("result_too_large", "result_too_large",
                              f"the result makes task {task.id} {size} bytes, over the store's limit of {limit} "
                              "bytes: return a reference to large results instead")

    async def save(self, worker: QueueWorker, items: list[str], new: TaskRecord, data: bytes, seq: int,
                    ttl: float | None, attempt: Attempt | None = None) -> bool:
        for attempt_no in range(5):
            try:
                await self.store.save_raw(new.id, data, seq, ttl=ttl)
                return True
            except ConflictError:
                self.metrics.save_conflicts.labels(queue=worker.name).inc()
                current, _ = await self.store.load(new.id, direct=self.leader())  # not a replica that is behind
                if current.task_state.terminal:
                    log.info("task_changed_elsewhere", task_id=new.id, queue=worker.name, state=current.state,
                             hint="the task ended elsewhere (cancelled?); this outcome is dropped")
                    await self.item(self.settle(items, attempt), ItemAction.ACK)
                else:
                    log.warning("attempt_superseded", task_id=new.id, queue=worker.name, state=current.state,
                                holder=current.dispatcher or None,
                                hint="the task was changed elsewhere while this attempt ran; this outcome is dropped")
                return False
            except (TransportError, JetStreamError) as exc:
                log.warning("task_save_failed", task_id=new.id, queue=worker.name, attempt=attempt_no + 1,
                            error=str(exc))
                await anyio.sleep(0.2 * 2**attempt_no)
        log.error("task_save_gave_up", task_id=new.id, queue=worker.name,
                  hint="the work item is not acknowledged; it is redelivered and the task resumes")
        return False

    async def item(self, replies: list[str], action: ItemAction, *, delay: float = 0.0, reason: str = "",
                    queue: str = "", task_id: str = "") -> None:
        """Act on a work item (and on duplicates of it: a queue holds at most one per task, the others are gone)."""
        if action is ItemAction.SCHEDULE:
            try:
                await self.scheduler.schedule(queue, task_id, delay)
            except (JetStreamError, TransportError) as exc:
                log.warning("schedule_failed", task_id=task_id, queue=queue, error=str(exc),
                            hint="falling back to a delayed redelivery")
                action = ItemAction.NAK  # with the same delay: a failed schedule never means "at once"
            else:
                action = ItemAction.ACK
        if action is ItemAction.ACK:
            body = b"+ACK"
        elif action is ItemAction.TERM:
            body = f"+TERM {reason}".strip().encode()
        elif action is ItemAction.NAK:
            body = b"-NAK" if delay <= 0 else b"-NAK " + msgspec.json.encode({"delay": nak_delay_ns(delay)})
        else:
            return
        for reply in replies:
            await publish_fast(self.nc, reply, body)

    async def quarantine(self, worker: QueueWorker, msg: Msg, task_id: str, raw: bytes, seq: int, error: str) -> None:
        """A stored document that is not a task: keep its bytes in a terminated record anyone can inspect."""
        assert msg.reply
        keep = raw[: max(0, (self.nc.max_payload - 4096) * 3 // 4)]
        record = TaskRecord(
            id=task_id, type="unknown", queue=worker.name, payload=keep, max_tries=0,
            state=TaskState.TERMINATED.value, created=format_ns(now_ns()), tries=0,
            last_err=f"the stored task document is corrupt ({error}); its original bytes are this record's payload",
            last_err_code="corrupt_task", content_type="application/octet-stream")
        self.metrics.dropped_items.labels(queue=worker.name, reason="corrupt_task").inc()
        log.error("corrupt_task", task_id=task_id, queue=worker.name, error=error)
        if await self.save(worker, [msg.reply], record, encode_task(record), seq, None):
            await self.event(record)
            if self.hooks is not None:
                self.hooks.state_changed(worker.name, None, record, "corrupt task document")
            await self.item([msg.reply], ItemAction.ACK)

    async def event(self, task: TaskRecord) -> None:
        try:
            await publish_fast(self.nc, names.task_state_event_subject(task.id), task_state_event(task))
        except Exception:  # noqa: BLE001 - events are best effort, like asyncjobs'
            pass
