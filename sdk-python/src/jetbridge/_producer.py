"""Producers: put tasks on queues and follow them to their end.

Enqueue is asyncjobs' two steps, in its order: the task is saved first (a create: compare-and-set against
sequence 0, so an id is never reused), then a work item pointing at it goes on the queue. If the second step
fails the task is marked ``queue_error`` with the reason, so nothing is left half-enqueued without a trace.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import msgspec
from nats.aio.client import Client

from . import _names as names
from ._errors import (
    ConfigError,
    ConflictError,
    CorruptTaskError,
    DuplicateTaskError,
    JetbridgeError,
    PayloadTooLargeError,
    QueueFullError,
    QueueNotFoundError,
    TransportError,
)
from ._events import decode_event, task_state_event
from ._ksuid import new_ksuid
from ._pipeline import enqueue_chunk
from ._protocol import JSON_CONTENT_TYPE, Bytes
from ._requester import Requester
from ._signing import Signer
from ._store import ERR_MAX_MESSAGES, ERR_STREAM_NOT_FOUND, ERR_UNAVAILABLE, JetStreamError, TaskStore, js_publish
from ._task import TaskRecord, TaskState, encode_task, new_task
from ._timeutil import NS, now_ns
from .tracing import current_traceparent, enqueue_span

DEFAULT_MAX_TRIES = 10
#: the largest try limit: asyncjobs stores max_tries as a Go int (int64)
MAX_TRIES_LIMIT = 2**63 - 1
T = TypeVar("T")
#: ``enqueue_many`` chunks in flight at once
CHUNKS_IN_FLIGHT = 3
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """One task to enqueue; see :meth:`Producer.enqueue` for the meaning of each field."""

    type: str
    payload: Any = None
    queue: str | None = None
    task_id: str | None = None
    dedup_key: str | None = None
    deadline: datetime | timedelta | None = None
    max_tries: int = DEFAULT_MAX_TRIES
    content_type: str | None = None


def payload_limit(max_payload: int) -> int:
    """The largest stored task document for a server ``max_payload`` (SPEC §8): half, less headroom."""
    return (max_payload - 4096) // 2


def _encode_payload(payload: Any, content_type: str | None) -> tuple[bytes, str]:
    if isinstance(payload, Bytes):
        return payload.data, payload.content_type
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), content_type or "application/octet-stream"
    try:
        return _json.encode(payload), JSON_CONTENT_TYPE
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
        raise ConfigError(f"payload is neither bytes nor JSON-serialisable: {exc}") from None


_LAST_DEADLINE_NS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()) * NS


def _deadline_ns(deadline: datetime | timedelta | None, now: int) -> int | None:
    if deadline is None:
        return None
    if isinstance(deadline, timedelta):
        value = now + int(deadline.total_seconds() * NS)
    elif deadline.tzinfo is None:
        raise ConfigError("deadline must be timezone-aware (for example datetime.now(timezone.utc) + ...)")
    else:
        value = int(deadline.astimezone(UTC).timestamp() * NS)
    if value > _LAST_DEADLINE_NS:  # stored as an RFC 3339 time: four-digit years
        raise ConfigError("deadline is too far in the future: it must be before the year 10000")
    return value


class Producer:
    """Enqueue tasks and follow them.

    Args:
        nc: a connected nats-py client.
        queue: the queue used when :meth:`enqueue` is not given one.
        signer: signs every task (asyncjobs-compatible ed25519), if set: ``jetbridge.Signer(seed_hex)``.
        unavailable_timeout: seconds to keep retrying while a store or queue exists but has no leader yet.
    """

    def __init__(self, nc: Client, *, queue: str = "DEFAULT", signer: Signer | None = None,
                 unavailable_timeout: float = 10.0) -> None:
        if not names.is_valid_name(queue):
            raise ConfigError(f"queue name {queue!r} is invalid: use letters, digits, '_', '-' and ':'")
        self._nc = nc
        self._rq = Requester(nc)
        self._store = TaskStore(self._rq)
        self.queue = queue
        self._signer = signer
        #: how long a publish is retried while its stream has no leader (see :meth:`_while_unavailable`)
        self.unavailable_timeout = unavailable_timeout

    async def enqueue(
        self, task_type: str, payload: Any = None, *, queue: str | None = None, task_id: str | None = None,
        dedup_key: str | None = None, deadline: datetime | timedelta | None = None,
        max_tries: int = DEFAULT_MAX_TRIES, content_type: str | None = None,
        delay: timedelta | float | None = None, at: datetime | str | None = None,
    ) -> str:
        """Enqueue one task and return its id.

        Args:
            task_type: routes the task to its handler; letters, digits, ``_``, ``-``, ``:``.
            payload: a JSON-serialisable value, or ``bytes`` / :class:`Bytes` for binary payloads.
            queue: the queue (default: the producer's).
            task_id: your own id instead of a KSUID; enqueueing an id twice raises ``DuplicateTaskError``.
            dedup_key: tasks with the same key within the store's duplicate window (2 minutes by default) are
                enqueued once; the second call raises ``DuplicateTaskError`` naming the first task.
            deadline: after this the task is not started any more (absolute, or from now).
            max_tries: attempts at most (0: no limit); the queue's limit caps it.
            content_type: for bytes payloads.
            delay, at: run it this long from now (seconds or timedelta), or at this time (aware datetime or RFC
                3339): it waits in state ``scheduled``, holding no slot, and can be cancelled or rescheduled.

        Raises:
            ConfigError, PayloadTooLargeError, DuplicateTaskError, QueueNotFoundError, QueueFullError,
            TransportError.
        """
        spec = TaskSpec(type=task_type, payload=payload, queue=queue, task_id=task_id, dedup_key=dedup_key,
                        deadline=deadline, max_tries=max_tries, content_type=content_type)
        if delay is not None or at is not None:
            from ._delay import due_ns, enqueue_delayed

            return await enqueue_delayed(self, spec, due_ns(delay, at, now_ns()))
        return await self._enqueue(spec)

    async def reschedule(self, task_id: str, *, delay: timedelta | float | None = None,
                         at: datetime | str | None = None) -> TaskRecord:
        """Move a delayed task that is still waiting to a new due time (see :mod:`jetbridge._delay`)."""
        from ._delay import due_ns, reschedule

        return await reschedule(self, task_id, due_ns(delay, at, now_ns()))

    async def enqueue_many(self, tasks: Iterable[TaskSpec], *, chunk: int = 500) -> list[str | JetbridgeError]:
        """Enqueue many tasks, pipelined; returns, in order, each id or its error.

        Works in chunks of ``chunk`` tasks: every task of a chunk is stored at once, then every stored task's work
        item is published at once, then the events. Each item still goes out only after its own task is stored,
        as in :meth:`enqueue`, but the round trips overlap instead of following one another (see
        :mod:`jetbridge._pipeline`). Two chunks are in flight at a time, so that the server stores one while the
        next is built.
        """
        specs = list(tasks)
        results: list[str | JetbridgeError] = [""] * len(specs)
        step = max(1, chunk)
        gate = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

        async def one(start: int) -> None:
            try:
                await enqueue_chunk(self, specs[start:start + step], results, start)
            finally:
                gate.release()

        async with asyncio.TaskGroup() as group:
            for start in range(0, len(specs), step):
                await gate.acquire()
                group.create_task(one(start))
        return results

    def _build(self, spec: TaskSpec) -> tuple[TaskRecord, str, bytes]:
        """The task document of ``spec``, its queue and its stored bytes; raises :class:`ConfigError` and
        :class:`PayloadTooLargeError` for what cannot be enqueued."""
        queue = spec.queue or self.queue
        for label, value in (("task type", spec.type), ("queue name", queue)):
            if not names.is_valid_label(value):
                raise ConfigError(f"{label} {value!r} is invalid: use 1-256 letters, digits, '_', '-' and ':'")
        if spec.task_id is not None and not names.is_valid_name(spec.task_id):
            raise ConfigError(f"task id {spec.task_id!r} is invalid: use 1-256 letters, digits, '_', '-' and ':'")
        if not isinstance(spec.max_tries, int) or isinstance(spec.max_tries, bool) or spec.max_tries < 0 \
                or spec.max_tries > MAX_TRIES_LIMIT:
            raise ConfigError(f"max_tries must be a whole number from 0 (no limit) to {MAX_TRIES_LIMIT}, "
                              f"not {spec.max_tries!r}")
        data, ctype = _encode_payload(spec.payload, spec.content_type)
        if len(ctype) > 255:
            raise ConfigError(f"content_type of {len(ctype)} characters is too long: the protocol carries at most 255")
        now = now_ns()
        deadline = _deadline_ns(spec.deadline, now)
        doc = new_task(task_id=spec.task_id or new_ksuid(), task_type=spec.type, queue=queue, payload=data,
                       content_type=ctype, max_tries=spec.max_tries, created_ns=now, deadline_ns=deadline)
        doc.traceparent = current_traceparent() or ""  # the trace it joins (jetbridge.tracing), if any
        if self._signer is not None:
            doc.signature = self._signer.sign(doc)
        stored = encode_task(doc)
        size = len(stored)
        limit = payload_limit(self._nc.max_payload)
        if size > limit:
            raise PayloadTooLargeError(
                f"task {doc.id} of type {spec.type} is {size} bytes stored, over the limit of {limit} "
                f"(half of the server's max_payload {self._nc.max_payload}, less 4096): store large data "
                "elsewhere and enqueue a reference to it", size=size, limit=limit)
        return doc, queue, stored

    async def _enqueue(self, spec: TaskSpec) -> str:
        with enqueue_span(spec.type, spec.queue or self.queue) as span:
            doc, queue, _ = self._build(spec)
            if span is not None:
                span.set_attribute("jetbridge.task.id", doc.id)
            seq = await self._store_new(doc, queue, spec.dedup_key)
            await self._queue_item(doc, queue, seq)
            await self._nc.publish(names.task_state_event_subject(doc.id), task_state_event(doc))
            return doc.id

    async def _while_unavailable(self, stream: str, what: str, publish: Callable[[], Awaitable[T]]) -> T:
        """``publish()``, tried again while ``stream`` exists but has no leader to answer (a cluster election).

        A publish that meets no responders was not stored, so trying it again is safe. It is retried for at most
        :attr:`unavailable_timeout` seconds, then fails saying the stream is unavailable; a stream that does not
        exist fails at once with ``ERR_STREAM_NOT_FOUND`` as before.
        """
        give_up = time.monotonic() + self.unavailable_timeout
        delay = 0.05
        while True:
            try:
                return await publish()
            except (JetStreamError, TransportError) as exc:
                # No responders, or no ack in time: ask whether the stream is there but leaderless.
                if isinstance(exc, JetStreamError) and exc.err_code not in (ERR_STREAM_NOT_FOUND, ERR_UNAVAILABLE):
                    raise
                state = await self._store.stream_state(stream)
                if state == "missing" or (isinstance(exc, TransportError) and state == "ok"):
                    raise
                if time.monotonic() + delay > give_up:
                    raise TransportError(
                        f"{what} {stream} is unavailable (it exists but no server leads it yet, e.g. during a "
                        f"cluster election); retried for {self.unavailable_timeout:g}s: try again later") from None
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _store_new(self, doc: TaskRecord, queue: str, dedup_key: str | None, *, tried: int = 0) -> int:
        """Step one of an enqueue: store the task (a create); returns the sequence to save against.

        ``tried``: creates of this very document already sent (whose answer was lost), so a "taken" answer may be
        our own earlier create.
        """

        async def create() -> int:
            nonlocal tried
            tried += 1
            try:
                return await self._store.create(doc, dedup_key=dedup_key)
            except DuplicateTaskError as exc:
                if tried == 1 or exc.task_id != doc.id:
                    raise
                # An earlier try was stored but its ack was lost: the stored task is this one if it matches.
                stored, seq = await self._store.load(doc.id)
                if (stored.created_ns, stored.payload) != (doc.created_ns, doc.payload):
                    raise
                return seq

        try:
            return await self._while_unavailable(names.TASKS_STREAM, "the task store", create)
        except JetStreamError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise TransportError(
                    f"the task store {names.TASKS_STREAM} does not exist: create a queue first "
                    f"(`jetbridge queue add {queue}`) or start the dispatcher") from None
            raise TransportError(f"could not store task {doc.id}: {exc}") from None

    async def _queue_item(self, doc: TaskRecord, queue: str, seq: int) -> None:
        """Step two: put the work item on the queue; if that fails, mark the task ``queue_error`` and raise.

        The item's ``Nats-Msg-Id`` is the task id and the stored sequence: a second publish of this very item
        (a client retry) is deduplicated, while a task created again under a reused id (after ``delete``, within
        the dedup window) gets its own item instead of one the server drops as a duplicate.
        """
        item = names.work_item(doc.id)
        msg_id = f"{doc.id}:{seq}"
        try:
            await self._while_unavailable(
                names.queue_stream(queue), "queue",
                lambda: js_publish(self._rq, names.queue_subject(queue, doc.id), item, {names.H_MSG_ID: msg_id}))
        except (JetStreamError, TransportError) as exc:
            error = self._queue_error(exc, queue, doc.id)
            doc.state = TaskState.QUEUE_ERROR.value
            doc.last_err = str(error)
            try:
                await self._store.save(doc, seq)
            except JetbridgeError:
                pass
            raise error from None

    @staticmethod
    def _queue_error(exc: Exception, queue: str, task_id: str) -> JetbridgeError:
        if isinstance(exc, JetStreamError) and exc.err_code == ERR_STREAM_NOT_FOUND:
            return QueueNotFoundError(f"queue {queue} does not exist (task {task_id} not enqueued): "
                                      f"create it with `jetbridge queue add {queue}`")
        if isinstance(exc, JetStreamError) and (exc.err_code in ERR_MAX_MESSAGES or "maximum" in exc.description):
            return QueueFullError(f"queue {queue} is full (task {task_id} not enqueued): "
                                  "raise its max entries or wait for it to drain")
        return TransportError(f"could not put task {task_id} on queue {queue}: {exc}")

    async def get(self, task_id: str) -> TaskRecord:
        """The task as stored now; raises :class:`TaskNotFoundError`."""
        doc, _ = await self._store.load(task_id)
        return doc

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskRecord:
        """Wait until the task is in a terminal state and return it.

        Waits on the task's lifecycle events; events are best effort, so it also re-reads the task now and then.
        Raises ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        terminal = anyio.Event()

        async def on_event(msg: Any) -> None:
            try:
                if TaskState(decode_event(msg.data).state).terminal:
                    terminal.set()
            except (ValueError, msgspec.DecodeError):
                pass

        sub = await self._nc.subscribe(names.task_state_event_subject(task_id), cb=on_event)
        try:
            with anyio.fail_after(timeout if timeout is not None else math.inf):
                while True:
                    try:
                        doc = await self.get(task_id)
                    except CorruptTaskError:
                        pass  # a dispatcher replaces it with a terminated record when it meets it
                    else:
                        if doc.task_state.terminal:
                            return doc
                    with anyio.move_on_after(2.0):
                        await terminal.wait()
        finally:
            await sub.unsubscribe()

    async def cancel(self, task_id: str, *, reason: str = "cancelled by operator") -> TaskRecord:
        """Cancel a task: it ends ``terminated`` and a running attempt is told to stop.

        Cancelling a task that has already ended changes nothing and returns it as it is.
        """
        while True:
            doc, seq = await self._store.load(task_id)
            if doc.task_state.terminal:
                return doc
            doc.state = TaskState.TERMINATED.value
            doc.last_err = reason
            doc.last_err_code = "cancelled"
            try:
                await self._store.save(doc, seq)
            except ConflictError:
                continue
            await self._nc.publish(names.task_state_event_subject(doc.id), task_state_event(doc))
            await self._nc.publish(names.CONTROL_CANCEL_SUBJECT, _json.encode({"task_id": task_id, "reason": reason}))
            return doc

    async def retry(self, task_id: str, *, queue: str | None = None) -> TaskRecord:
        """Run a task again: it goes back on its queue in state ``retry``, keeping its tries and last error.

        Raises :class:`ConflictError` when the task is running now (cancel it first).
        """
        if queue is not None and not names.is_valid_name(queue):
            raise ConfigError(f"queue name {queue!r} is invalid: use 1-256 letters, digits, '_', '-' and ':'")
        doc, seq = await self._store.load(task_id)
        if doc.task_state is TaskState.ACTIVE:
            raise ConflictError(f"task {task_id} is running now: cancel it first, then retry it")
        if doc.signature and queue is not None and queue != doc.queue:
            # The signature covers the queue (asyncjobs' signing message): a moved task would fail verification.
            raise ConfigError(f"task {task_id} is signed for queue {doc.queue}, and the signature covers the queue: "
                              f"it cannot move to {queue}; retry it on its own queue, or enqueue a new signed task "
                              f"on {queue}")
        before = msgspec.structs.replace(doc)
        doc.queue = queue or doc.queue
        doc.state = TaskState.RETRY.value
        doc.result = None
        seq = await self._store.save(doc, seq)
        item = names.work_item(doc.id)
        try:
            await js_publish(self._rq, names.queue_subject(doc.queue, doc.id), item)
        except (JetStreamError, TransportError) as exc:
            try:  # not on a queue: put the task back as it was, rather than leave it waiting for nothing
                await self._store.save(before, seq)
            except JetbridgeError:
                pass
            raise self._queue_error(exc, doc.queue, doc.id) from None
        await self._nc.publish(names.task_state_event_subject(doc.id), task_state_event(doc))
        return doc

    async def delete(self, task_id: str) -> None:
        """Remove a task from the store (its queue item, if any, is dropped when it is next delivered)."""
        await self.get(task_id)
        await self._store.delete(task_id)

    async def close(self) -> None:
        await self._rq.close()


def ids_of(results: Sequence[str | JetbridgeError]) -> list[str]:
    """The ids of the tasks an :meth:`Producer.enqueue_many` call enqueued."""
    return [r for r in results if isinstance(r, str)]

