"""Handler services: run task handlers for the Jetbridge dispatcher, as a NATS micro service.

A :class:`Service` registers one micro endpoint per task type (subject ``<prefix>.<type>``, queue group
``jetbridge``), so replicas share the load and ``nats micro ls|info|stats`` show it. nats-py calls an endpoint's
handler for one message at a time, so each request is started as its own task, up to ``concurrency`` at once.
From the moment a request is received (SPEC §5.1) the service heartbeats for it, also while it waits for a
worker; it listens for a cancel, bounds it by the attempt's budget (a ``timeout`` cancel), and with the 1.1
``heartbeat_ack`` fences the attempt (a ``lost`` cancel) when its heartbeats stop being acknowledged (§5.2).
"""

from __future__ import annotations

import functools
import inspect
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import nats.micro
import structlog
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import Request

from . import _names as names
from . import _protocol as proto
from ._errors import ConfigError, ProtocolError, Retry, Terminate
from ._fastread import harden
from ._heartbeat import Heartbeats
from ._inflight import InFlight
from ._middleware import Chains, Middleware
from ._stats import MicroStats
from ._timeutil import NS, parse_ns

log = structlog.get_logger("jetbridge.service")

SDK_VERSION = "0.1.0"
Handler = Callable[["Task"], Awaitable[Any]] | Callable[["Task"], Any]
H = TypeVar("H", bound=Handler)


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / NS, tz=UTC)


class Task:
    """One attempt of a task, as a handler sees it.

    Attributes:
        id: the task id; stable across attempts, so use it as an idempotency key.
        type, queue: what the task is and where it came from.
        attempt: this attempt's number (from 1); ``max_attempts`` is 0 when unlimited.
        payload: the payload: a JSON value, or :class:`~jetbridge.Bytes` for binary payloads.
        deadline: the task's overall deadline, if any; ``attempt_deadline``: when the dispatcher stops waiting.
        budget: seconds this attempt may take, as the dispatcher sent it.
    """

    def __init__(self, request: proto.TaskRequest, service: Service, headers: dict[str, str]) -> None:
        self._request = request
        self._service = service
        self.id = request.task_id
        self.type = request.task_type
        self.queue = request.queue
        self.attempt = request.attempt
        self.max_attempts = request.max_attempts
        self.created = _utc(parse_ns(request.created))
        self.deadline = _utc(parse_ns(request.deadline)) if request.deadline else None
        self.attempt_deadline = _utc(parse_ns(request.attempt_deadline))
        self.budget = request.budget_ms / 1000
        self.payload: Any = request.decoded_payload()
        self.content_type = request.content_type
        self.headers = headers
        self.traceparent = request.traceparent if isinstance(request.traceparent, str) else headers.get(names.H_TRACEPARENT)
        self.cancel_reason: str | None = None
        self._started = time.monotonic()  # receipt: the budget and the heartbeat clock start here
        self._scope: anyio.CancelScope | None = None
        self._beats: Heartbeats | None = None  # set by the service that runs the attempt

    @property
    def token(self) -> str:
        return self._request.attempt_token

    def remaining(self) -> float:
        """Seconds left of this attempt's budget."""
        return max(0.0, self.budget - (time.monotonic() - self._started))

    async def heartbeat(self, progress: float | None = None, message: str | None = None) -> None:
        """Say the attempt is alive, optionally with progress (0 to 1) and a message the dispatcher stores."""
        if progress is not None and not 0 <= progress <= 1:
            raise ValueError(f"progress must be between 0 and 1, got {progress}")
        if self._beats is None:
            self._beats = Heartbeats(self._service.nc, self._request, on_lost=lambda: self._cancel("lost"))
        await self._beats.send(progress, message[:1024] if message else message)

    def _cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self._scope is not None:
            self._scope.cancel()


class Service:
    """A handler service.

    Args:
        nc: a connected nats-py client.
        name: the micro service name (letters, digits, ``-``, ``_``).
        version: its SemVer version.
        prefix: task subjects are ``<prefix>.<type>``; must match the dispatcher's routes.
        concurrency: attempts run at once by this replica.
        drain_timeout: on stop, how long running attempts may finish before they are cancelled.
    """

    def __init__(
        self, nc: Client, name: str = "jetbridge-python", *, version: str = "1.0.0",
        prefix: str = names.DEFAULT_TASK_SUBJECT_PREFIX, concurrency: int = 64, description: str | None = None,
        metadata: dict[str, str] | None = None, drain_timeout: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        self.nc = nc
        self.name = name
        self.version = version
        self.prefix = prefix
        self.description = description
        self.metadata = {"jetbridge.protocols": proto.PROTOCOLS_METADATA, "jetbridge.sdk": f"python/{SDK_VERSION}", **(metadata or {})}
        self.drain_timeout = drain_timeout
        self._handlers: dict[str, Callable[[Task], Awaitable[Any]]] = {}
        self._chains = Chains()
        self._limiter = anyio.Semaphore(concurrency)
        self._micro: nats.micro.service.Service | None = None
        self._stats = MicroStats(None)
        self._cancellable: dict[str, Task] = {}
        self._cancel_subs: dict[str, Subscription] = {}
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()
        #: set once a stopping service has unsubscribed and takes no new requests
        self.unsubscribed = anyio.Event()
        self.in_flight = InFlight()

    def handler(self, task_type: str) -> Callable[[H], H]:
        """Decorator: ``@service.handler("email:new")`` serves subject ``<prefix>.email:new``.

        The endpoint that receives a request runs it, so a dispatcher route that sends several types to
        ``<prefix>.images`` is served by ``@service.handler("images")``; ``"*"`` serves ``<prefix>.*``.
        """

        def register(fn: H) -> H:
            self.add_handler(task_type, fn)
            return fn

        return register

    def add_handler(self, task_type: str, fn: Handler) -> None:
        """Handle ``task_type`` with ``fn(task)``; ``fn`` may be async or blocking (run in a thread)."""
        if task_type != "*" and not names.is_valid_name(task_type):
            raise ConfigError(f"task type {task_type!r} is invalid: use letters, digits, '_', '-' and ':'")
        if task_type in self._handlers:
            raise ConfigError(f"task type {task_type!r} already has a handler")
        clash = [t for t in self._handlers if endpoint_name(t) == endpoint_name(task_type)]
        if clash:
            raise ConfigError(f"task types {clash[0]!r} and {task_type!r} would share the micro endpoint name "
                              f"{endpoint_name(task_type)!r}: serve them from two services")
        self._check_not_started("handlers")
        if inspect.iscoroutinefunction(fn):
            self._handlers[task_type] = fn
        else:
            async def threaded(task: Task, fn: Any = fn) -> Any:
                return await anyio.to_thread.run_sync(fn, task, abandon_on_cancel=True)

            self._handlers[task_type] = threaded

    def use(self, *middleware: Middleware) -> None:
        """Add middleware around every handler, the first given outermost (see :mod:`jetbridge.middleware`).

        A middleware is ``async def mw(task, next)``: it returns ``await next(task)`` (or a changed result), or
        short-circuits by returning a value or raising :class:`~jetbridge.Retry` / :class:`~jetbridge.Terminate`
        without calling ``next``. The built-in exception recovery is always outermost.
        """
        self._check_not_started("middleware")
        self._chains.use(middleware)

    def use_for(self, pattern: str, *middleware: Middleware) -> None:
        """Add middleware around the handlers of the task types matching ``pattern`` (fnmatch: ``"email:*"``).

        They run inside every :meth:`use` middleware, whatever the order of the calls, and in the order they were
        added among themselves. The pattern matches each request's task type, so a ``"*"`` handler gets the
        groups of every type it serves.
        """
        self._check_not_started("middleware")
        self._chains.use_for(pattern, middleware)

    def _check_not_started(self, what: str) -> None:
        if self._micro is not None:
            raise ConfigError(f"add {what} before the service starts")

    async def run(self, *, task_status: TaskStatus[Service] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`stop`, then drain: take no new requests and let running attempts finish."""
        if not self._handlers:
            raise ConfigError("the service has no handlers: register one with @service.handler(TYPE)")
        harden(self.nc)  # a flush given up must not end the connection's read loop (jetbridge._fastread)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._micro = await nats.micro.add_service(
                self.nc, name=self.name, version=self.version, description=self.description,
                metadata=self.metadata, queue_group=names.HANDLER_QUEUE_GROUP)
            for task_type, fn in self._handlers.items():
                subject = f"{self.prefix}.{task_type}"
                await self._micro.add_endpoint(
                    name=endpoint_name(task_type), subject=subject,
                    handler=functools.partial(self._on_request, endpoint_name(task_type), self._chains.wrap(fn)),
                    metadata={"jetbridge.task_type": task_type})
            self._stats = MicroStats(self._micro)
            task_status.started(self)
            await self._stop.wait()
            await self._micro.stop()
            self.unsubscribed.set()
            with anyio.move_on_after(self.drain_timeout) as scope:
                await self.in_flight.wait_idle()
            if scope.cancelled_caught:
                tg.cancel_scope.cancel()

    def stop(self) -> None:
        """Stop taking requests and drain (see :meth:`run`)."""
        self._stop.set()

    async def _on_request(self, endpoint: str, fn: Callable[[Task], Awaitable[Any]], request: Request) -> None:
        # Start every request at once: one waiting for a free slot (in _call) heartbeats and can be cancelled,
        # instead of sitting unseen in the subscription while the dispatcher declares it lost.
        assert self._tg is not None
        self.in_flight.enter()
        self._tg.start_soon(self._serve, endpoint, fn, request._msg, time.perf_counter_ns())

    async def _serve(self, endpoint: str, fn: Callable[[Task], Awaitable[Any]], msg: Msg, received_ns: int) -> None:
        error: str | None = "request failed"
        try:
            error = await self._attempt(fn, msg)
        except Exception as exc:  # noqa: BLE001 - a bad request must never take the service down
            log.exception("request_failed", subject=msg.subject, error=repr(exc))
        finally:
            self.in_flight.leave()
            self._stats.record(endpoint, time.perf_counter_ns() - received_ns, error)

    async def _reply(self, msg: Msg, reply: tuple[bytes, dict[str, str]]) -> None:
        if msg.reply:
            body, headers = reply
            await self.nc.publish(msg.reply, body, headers=headers or None)

    async def _attempt(self, fn: Callable[[Task], Awaitable[Any]], msg: Msg) -> str | None:
        """Run one request to its reply; returns the error the micro stats record (None for success)."""
        try:
            request = proto.decode_request(msg.data)
        except proto.Rejection as rejection:
            log.warning("request_rejected", subject=msg.subject, code=rejection.code, reason=rejection.message)
            await self._reply(msg, rejection.reply())
            return rejection.message
        task = Task(request, self, dict(msg.headers or {}))
        reply = await self._run_handler(fn, task, request)
        body, headers = reply
        if wire_size(body, headers) > self.nc.max_payload:  # headers count too (SPEC §8)
            reply = proto.encode_error(
                "terminate", "result_too_large",
                f"the result of task {task.id} is {len(body)} bytes, over the server's max_payload "
                f"{self.nc.max_payload}: return a reference to large results instead",
                attempt_token=task.token)
        await self._reply(msg, reply)
        return reply[1].get(names.H_SERVICE_ERROR)  # retry and terminate replies carry it: micro errors

    async def _run_handler(
        self, fn: Callable[[Task], Awaitable[Any]], task: Task, request: proto.TaskRequest,
    ) -> tuple[bytes, dict[str, str]]:
        """Run ``fn`` for one attempt: bounded by its budget, heartbeating, cancellable. Returns the reply."""
        self._cancellable[task.token] = task
        task._beats = hb = Heartbeats(self.nc, request, on_lost=lambda: task._cancel("lost"))
        try:
            async with anyio.create_task_group() as beats:
                hb.attach(beats)
                if hb.enabled:
                    beats.start_soon(hb.run)  # from receipt, also while waiting for a worker
                beats.start_soon(self._budget, task)
                await self._watch_cancels(request.cancel_subject)
                if hb.is_late(time.time_ns()):
                    await hb.confirm()  # not acknowledged: fenced, and _call replies without running fn
                reply = await self._call(fn, task)
                beats.cancel_scope.cancel()
        finally:
            self._cancellable.pop(task.token, None)
        return reply

    @staticmethod
    async def _budget(task: Task) -> None:
        """Budget exhaustion is a cancel with reason ``timeout`` (SPEC §3.3); the reply is still sent."""
        await anyio.sleep(task.remaining())
        task._cancel("timeout")

    async def _call(self, fn: Callable[[Task], Awaitable[Any]], task: Task) -> tuple[bytes, dict[str, str]]:
        try:
            with anyio.CancelScope() as scope:
                task._scope = scope
                if task.cancel_reason is not None:  # fenced or out of budget before it got here
                    scope.cancel()
                async with self._limiter:  # at most `concurrency` handlers run at once
                    result = await fn(task)  # the middleware chain; its recovery turns exceptions into Retry
            if scope.cancelled_caught:
                reason = task.cancel_reason or "timeout"
                return proto.encode_error("retry", "cancelled", f"attempt cancelled ({reason})", attempt_token=task.token)
            return proto.encode_ok(result, attempt_token=task.token)
        except Retry as exc:
            after = int(exc.after * 1000) if exc.after is not None else None
            return proto.encode_error("retry", exc.code, exc.message, attempt_token=task.token, retry_after_ms=after)
        except Terminate as exc:
            return proto.encode_error("terminate", exc.code, exc.message, attempt_token=task.token)

    async def _watch_cancels(self, cancel_subject: str) -> None:
        """Subscribe once per cancel-subject prefix (``jetbridge.cancel.*``), not once per attempt.

        A cancel names its attempt by token, so one wildcard subscription serves every attempt and saves a
        SUB and an UNSUB per task.
        """
        prefix, _, _ = cancel_subject.rpartition(".")
        wildcard = f"{prefix}.*" if prefix else cancel_subject
        if wildcard not in self._cancel_subs:
            self._cancel_subs[wildcard] = await self.nc.subscribe(wildcard, cb=self._on_cancel)

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            cancel = proto.decode_cancel(msg.data)
        except ProtocolError:
            return
        task = self._cancellable.get(cancel.attempt_token)
        if task is not None and msg.subject.endswith(cancel.attempt_token):
            task._cancel(cancel.reason)



def endpoint_name(task_type: str) -> str:
    """The micro endpoint name of a task type: characters outside ``[A-Za-z0-9_-]`` become ``_`` (SPEC §2)."""
    if task_type == "*":
        return "catchall"
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in task_type)


def wire_size(body: bytes, headers: dict[str, str]) -> int:
    """What the server counts against max_payload: the NATS header block plus the body (SPEC §8)."""
    if not headers:
        return len(body)
    block = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return len(block.encode()) + len(body)


async def serve(service: Service, *, on_ready: Callable[[], object] | None = None) -> None:
    """Run ``service`` until SIGTERM or SIGINT, then drain it; for a handler process's ``main``.

    ``on_ready`` is called once the service is subscribed (e.g. to print a readiness line for a supervisor).
    """
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        await service.nc.flush()
        if on_ready is not None:
            on_ready()
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                service.stop()
                break
