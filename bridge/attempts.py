"""Running one attempt on a handler service, and everything that happens while it runs.

An attempt is one NATS request. While it is out, three things can end it early: the handler stops
heartbeating (its lease runs out: ``lost``), an operator cancels the task, or the dispatcher shuts down. Each
aborts the pending request with a reason and publishes a cancel to the handler. Replies and heartbeats carry
the attempt token; one for a token that is not running is stale, and is logged and counted, never stored.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import nats.errors
import structlog
from jetbridge.internal import (
    MS,
    NS,
    ProtocolError,
    RandomPool,
    Requester,
    TaskRecord,
    encode_task,
    format_ms,
    format_ns,
    names,
    now_ns,
    proto,
)
from nats.aio.client import Client
from nats.aio.msg import Msg

from .beats import SharedSubscriptions
from .logs import RateLimitedLog
from .metrics import Metrics
from .routes import Route
from .states import AttemptOutcome
from .tracing import request_traceparent
from .wheel import TimerWheel

log = structlog.get_logger("jetbridge.attempt")

#: watchdogs share one timer wheel with slots this long: one may wake up to a tick early, sees what is left of
#: its lease or budget and arms again for exactly that (bridge/wheel.py)
WATCHDOG_TICK = 0.01


#: attempt tokens' bytes
_random = RandomPool()


def new_token() -> str:
    """96 bits from the operating system's CSPRNG, URL-safe base64 (16 characters): unguessable per attempt.

    A handler that served one attempt must not be able to predict the next token and forge its heartbeats. Every
    token is 12 fresh bytes of ``secrets.token_bytes`` (``os.urandom``); they are drawn in bulk, one system call
    for hundreds of attempts, and no byte is ever used twice, also after a fork (jetbridge._random).
    """
    return base64.urlsafe_b64encode(_random.take(12)).decode()


class AttemptAborted(Exception):
    def __init__(self, reason: proto.CancelReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(eq=False)
class Attempt:
    """One running attempt."""

    task: TaskRecord
    seq: int
    queue: str
    route: Route
    subject: str
    budget: float
    lease: float | None
    #: the try limit that applies (the task's own capped by the queue's; 0: none), as the handler is told
    max_attempts: int = 0
    token: str = field(default_factory=new_token)
    started: float = field(default_factory=time.monotonic)
    last_beat: float = field(default_factory=time.monotonic)
    #: a valid heartbeat has arrived (until then the first-contact grace applies)
    contacted: bool = False
    #: reply subjects of duplicate work items for this task, adopted while the attempt runs (see bridge.takeover)
    adopted: list[str] = field(default_factory=list)
    #: the outcome is being settled: nothing more is adopted
    finished: bool = False
    #: when the adopted items were last kept in progress on the server
    adopted_told: float = 0.0
    progress: float | None = None
    progress_message: str = ""
    progress_dirty: bool = False
    #: serialises saves of this attempt's task (progress and the outcome)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: tracing (bridge/tracing.py): the attempt's open span and the traceparent sent to the handler
    span: Any = None
    traceparent: str = ""
    #: global limits (bridge/limiter.py): whether its permits are still held, asked right before it is sent
    permitted: Callable[[], bool] | None = None


class AttemptRunner:
    """Sends attempts to handlers and watches them until they end."""

    def __init__(self, nc: Client, *, dispatcher_id: str, metrics: Metrics, first_contact_grace: float = 2.0) -> None:
        self._nc = nc
        self.dispatcher_id = dispatcher_id
        self._metrics = metrics
        # ".a": its own corner of the connection's inbox, so the push deliveries of nats-py's KV watches (whose
        # subjects are `_INBOX.jetbridge.<id>.<nuid>`: limits, schedules) never reach it as stale replies.
        self._requester = Requester(nc, prefix=f"_INBOX.jetbridge.{dispatcher_id}.a", on_stale=self._on_stale_reply)
        self._hb_prefix = f"{names.HEARTBEAT_SUBJECT_PREFIX}.{dispatcher_id}"
        #: extra silence allowed before an attempt's first heartbeat: a cold runtime, a forking command handler
        #: or a request waiting in a busy handler's queue has not yet seen the task
        self.first_contact_grace = first_contact_grace
        self.running: dict[str, Attempt] = {}
        self._by_task: dict[str, Attempt] = {}
        self._finished: OrderedDict[str, str] = OrderedDict()
        self._bad_beats = RateLimitedLog(log, "invalid_heartbeat")
        self._stale_beats = RateLimitedLog(log, "stale_heartbeat")
        # "_" is no token (tokens are 16 characters): the anchor subject never gets a heartbeat
        self._beats = SharedSubscriptions(nc, f"{self._hb_prefix}._", self._on_heartbeat)
        self._stale_replies = RateLimitedLog(log, "stale_reply")
        self._watchdogs = TimerWheel(WATCHDOG_TICK)

    async def start(self) -> None:
        await self._requester.start()
        await self._beats.start()

    async def close(self) -> None:
        await self._beats.close()
        await self._requester.close()
        self._watchdogs.close()

    def attempt_for(self, task_id: str) -> Attempt | None:
        """The attempt of ``task_id`` this dispatcher holds: from its start until its outcome is settled."""
        return self._by_task.get(task_id)

    def release(self, attempt: Attempt) -> None:
        """The attempt's outcome is saved (or given up): the task is no longer held here."""
        if self._by_task.get(attempt.task.id) is attempt:
            del self._by_task[attempt.task.id]

    def abort(self, attempt: Attempt, reason: proto.CancelReason, message: str) -> bool:
        """End a running attempt early; ``run`` returns the matching outcome."""
        return self._requester.abort(attempt.token, AttemptAborted(reason, message))

    async def run(self, attempt: Attempt) -> AttemptOutcome:
        """Run ``attempt`` to its end and say how it ended. Never raises for handler behaviour."""
        self.running[attempt.token] = attempt
        self._by_task[attempt.task.id] = attempt
        beats: int | None = None
        if attempt.lease is not None:
            # one watchdog per attempt: it also ends the attempt when its budget is spent (the request has none)
            self._arm_watchdog(attempt, min(attempt.lease + self.first_contact_grace, attempt.budget))
        try:
            if attempt.lease is not None:  # v1 with heartbeats only (an asyncjobs route has no lease)
                beats = await self._beats.add(self.heartbeat_subject(attempt))
            # the last await before the request is sent: from here it goes out without another
            if attempt.permitted is not None and not attempt.permitted():
                return _permit_gone(attempt)
            if attempt.route.mode == "asyncjobs":
                return await self._run_asyncjobs(attempt)
            return await self._run_v1(attempt)
        finally:
            if attempt.lease is not None:
                self._watchdogs.remove(attempt.token)
            if beats is not None:
                await self._beats.remove(beats)
            self.running.pop(attempt.token, None)
            self._finished[attempt.token] = attempt.task.id
            if len(self._finished) > 10_000:
                self._finished.popitem(last=False)

    def heartbeat_subject(self, attempt: Attempt) -> str:
        return f"{self._hb_prefix}.{attempt.token}"

    def _request(self, attempt: Attempt) -> proto.TaskRequest:
        task = attempt.task
        now = now_ns()
        encoding, ctype, payload = proto.payload_fields(task.payload, task.content_type or None)
        interval = int(attempt.lease * 1000 / 3) if attempt.lease is not None else 0
        return proto.TaskRequest(
            type=proto.REQUEST_TYPE, protocol=proto.PROTOCOL_VERSION, task_id=task.id, task_type=task.type, queue=attempt.queue, attempt=task.tries,
            max_attempts=attempt.max_attempts, created=format_ms(task.created_ns),
            deadline=format_ms(deadline) if (deadline := task.deadline_ns) is not None else None,
            attempt_token=attempt.token, attempt_deadline=format_ms(now + int(attempt.budget * NS)),
            budget_ms=int(attempt.budget * 1000), heartbeat_subject=self.heartbeat_subject(attempt),
            heartbeat_interval_ms=interval, heartbeat_ack=interval > 0, cancel_subject=f"{names.CANCEL_SUBJECT_PREFIX}.{attempt.token}",
            payload_encoding=encoding, content_type=ctype, payload=payload,
            traceparent=request_traceparent(attempt),
        )

    async def _run_v1(self, attempt: Attempt) -> AttemptOutcome:
        request = self._request(attempt)
        try:
            reply = await self._requester.request(
                attempt.subject, proto.encode_request(request), headers=proto.request_headers(request),
                timeout=None if attempt.lease is not None else attempt.budget, token=attempt.token)
        except BaseException as exc:  # noqa: BLE001 - every way the wait ends maps to an outcome
            return await self._ended_without_reply(attempt, exc)
        outcome = proto.interpret_reply(reply.headers, reply.data)
        if outcome.attempt_token is not None and outcome.attempt_token != attempt.token:
            self._metrics.stale_messages.labels(kind="reply").inc()
            return AttemptOutcome("protocol_error", "protocol_error",
                                  f"protocol error: reply carried attempt token {outcome.attempt_token}, not this attempt's")
        if outcome.kind == "complete":
            if isinstance(outcome.result, proto.Bytes):
                return AttemptOutcome("complete", result=base64.b64encode(outcome.result.data).decode(),
                                      result_encoding="base64", content_type=outcome.result.content_type)
            return AttemptOutcome("complete", result=outcome.result)
        if outcome.kind == "protocol_error":
            self._metrics.protocol_errors.labels(queue=attempt.queue, type=attempt.task.type).inc()
            return AttemptOutcome("protocol_error", "protocol_error", outcome.message)
        retry_after = outcome.retry_after_ms / 1000 if outcome.retry_after_ms is not None else None
        if outcome.kind == "terminate" and outcome.error_code == "result_too_large":
            return AttemptOutcome("result_too_large", outcome.error_code, outcome.message)
        return AttemptOutcome(outcome.kind, outcome.error_code, outcome.message or outcome.error_code,
                              retry_after=retry_after)

    async def _run_asyncjobs(self, attempt: Attempt) -> AttemptOutcome:
        deadline = now_ns() + int(attempt.budget * NS)
        headers = {names.H_AJ_CONTENT_TYPE: names.AJ_TASK_CONTENT_TYPE,
                   names.H_AJ_DEADLINE: format_ns(deadline - 2 * NS, digits=0)}
        try:
            reply = await self._requester.request(attempt.subject, encode_task(attempt.task), headers=headers,
                                                  timeout=attempt.budget, token=attempt.token)
        except BaseException as exc:  # noqa: BLE001
            return await self._ended_without_reply(attempt, exc, notify=False)
        rh = reply.headers or {}
        if rh.get(names.H_AJ_TERMINATE):
            return AttemptOutcome("terminate", "terminate", f"{rh[names.H_AJ_TERMINATE]}: terminate task")
        if rh.get(names.H_AJ_ERROR):
            return AttemptOutcome("retry", "handler_error", rh[names.H_AJ_ERROR])
        return AttemptOutcome("complete", result=base64.b64encode(reply.data).decode(), result_encoding="base64",
                              content_type="application/octet-stream")

    async def _ended_without_reply(self, attempt: Attempt, exc: BaseException, *, notify: bool = True) -> AttemptOutcome:
        task = attempt.task
        if isinstance(exc, nats.errors.NoRespondersError):
            self._metrics.handler_available.set(0, attempt.subject)
            return AttemptOutcome("no_handler", "no_handler",
                                  f"no handler online for task type {task.type} (subject {attempt.subject})")
        if isinstance(exc, AttemptAborted):
            reason, outcome = exc.reason, _ABORT_OUTCOMES[exc.reason]
            message = exc.message
        elif isinstance(exc, nats.errors.TimeoutError):
            deadline = task.deadline_ns
            if deadline is not None and now_ns() >= deadline - 10 * MS:
                reason, outcome = "deadline", "deadline"
                message = f"deadline {task.deadline} passed during attempt {task.tries}"
            else:
                reason, outcome = "timeout", "timeout"
                message = f"attempt {task.tries} timed out after {attempt.budget:.3f}s without a reply"
        elif isinstance(exc, asyncio.CancelledError):
            if notify:
                await self._publish_cancel(attempt, "shutdown", "dispatcher stopped")
            raise exc
        else:
            log.warning("attempt_failed", task_id=task.id, queue=attempt.queue, type=task.type, error=repr(exc))
            return AttemptOutcome("retry", "dispatch_error", f"could not send attempt {task.tries}: {exc}")
        if notify:
            await self._publish_cancel(attempt, reason, message)
        return AttemptOutcome(outcome, _ERROR_CODES[outcome], message)  # type: ignore[arg-type]

    async def _publish_cancel(self, attempt: Attempt, reason: proto.CancelReason, message: str) -> None:
        if not self._nc.is_connected or attempt.route.mode != "jetbridge":
            return
        body = proto.encode_cancel(attempt.task.id, attempt.token, reason, message[:1024])
        try:
            await self._nc.publish(f"{names.CANCEL_SUBJECT_PREFIX}.{attempt.token}", body)
        except Exception:  # noqa: BLE001 - cancels are best effort
            pass

    def _arm_watchdog(self, attempt: Attempt, delay: float) -> None:
        self._watchdogs.add(attempt.token, delay, partial(self._check_lease, attempt))

    def _check_lease(self, attempt: Attempt) -> None:
        """The watchdog: the attempt's budget is spent (a timeout, as the request's own timer would say), or its
        handler has been silent for a lease (lost); else look again when either can next happen."""
        assert attempt.lease is not None
        now = time.monotonic()  # the wheel may run this up to a tick early: what is left is armed again
        left = attempt.budget - (now - attempt.started)
        if left <= 0:
            if not self._requester.abort(attempt.token, nats.errors.TimeoutError()) and attempt.token in self.running:
                self._arm_watchdog(attempt, 0.005)  # spent before its request was even sent: end it once it is
            return
        allowed = attempt.lease if attempt.contacted else attempt.lease + self.first_contact_grace
        silent = now - attempt.last_beat
        if silent >= allowed:
            first = "" if attempt.contacted else " (no heartbeat at all since the request was sent)"
            self.abort(attempt, "lost", f"handler lost: no heartbeat for {silent:.3f}s during attempt "
                                        f"{attempt.task.tries}{first} (heartbeat timeout {attempt.lease:.3f}s)")
        else:
            self._arm_watchdog(attempt, min(allowed - silent, left))

    async def _on_heartbeat(self, msg: Msg) -> None:
        attempt = self.running.get(msg.subject[len(self._hb_prefix) + 1:])
        if attempt is None:
            return  # ended while this heartbeat was queued: no ack, so a 1.1 handler fences itself
        try:
            beat = proto.decode_heartbeat(msg.data)
        except ProtocolError as exc:
            self._metrics.stale_messages.labels(kind="invalid_heartbeat").inc()
            self._bad_beats.warning(task_id=attempt.task.id, queue=attempt.queue, type=attempt.task.type,
                                    error=str(exc))
            return
        if beat.attempt_token != attempt.token or beat.task_id != attempt.task.id:
            self._metrics.stale_messages.labels(kind="heartbeat").inc()
            self._stale_beats.info(task_id=attempt.task.id, queue=attempt.queue, type=attempt.task.type,
                                   named_task=beat.task_id, why="token or task id does not match")
            return
        attempt.last_beat = time.monotonic()
        attempt.contacted = True
        if beat.progress is not None or beat.message is not None:
            attempt.progress = beat.progress if beat.progress is not None else attempt.progress
            attempt.progress_message = beat.message if beat.message is not None else attempt.progress_message
            attempt.progress_dirty = True
        if msg.reply:
            await self._nc.publish(msg.reply, b"")

    def _on_stale_reply(self, token: str, msg: Msg) -> None:
        self._metrics.stale_messages.labels(kind="reply").inc()
        task_id = self._finished.get(token) or (msg.headers or {}).get(names.H_TASK_ID)
        self._stale_replies.info(task_id=task_id, token=token,
                                 why="the attempt had already ended; the reply is not stored")


def _permit_gone(attempt: Attempt) -> AttemptOutcome:
    """An attempt not sent: its global limit permit expired first (the dispatcher was paused) and may be another's
    now. It ends as a lost attempt would (its try is spent, the retry policy applies); it never reached a handler."""
    log.warning("attempt_not_sent", task_id=attempt.task.id, queue=attempt.queue, type=attempt.task.type,
                attempt=attempt.task.tries, hint="its global limit permit expired before it was sent (was this "
                                                 "dispatcher paused?): not sent, retried under a new permit")
    return AttemptOutcome("lost", "handler_lost", f"attempt {attempt.task.tries} not sent: its global limit permit "
                                                  "expired first (was this dispatcher paused?)")


_ABORT_OUTCOMES = {"lost": "lost", "operator": "cancelled", "shutdown": "shutdown", "deadline": "deadline",
                   "timeout": "timeout"}
_ERROR_CODES = {"lost": "handler_lost", "cancelled": "cancelled", "shutdown": "shutdown", "deadline": "deadline",
                "timeout": "timeout"}
