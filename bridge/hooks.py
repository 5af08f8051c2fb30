"""Dispatcher hooks: code of your own called before and after every attempt and on every state change this
dispatcher saves (dramatiq-style middleware for the dispatcher), for audit logs, notifications and metrics.

A hook is an installed Python entry point in the group ``jetbridge.hooks``, selected by name with the ``hooks``
setting (``JETBRIDGE_HOOKS=audit,notify``, ``jetbridge run --hook audit``)::

    # pyproject.toml of your package
    [project.entry-points."jetbridge.hooks"]
    audit = "mycompany.audit:AuditHook"

The entry point names a class (instantiated once, without arguments), an instance or a module, with any of the
methods ``before_attempt(AttemptStarted)``, ``after_attempt(AttemptEnded)`` and ``state_changed(StateChanged)``.

Hooks observe; they never steer or hold up a task. The dispatcher only *offers* each call: it goes into the hook's
own bounded queue (:data:`QUEUE_SIZE`; when full, the call is dropped and counted) and the dispatcher carries on at
once. A task runs and is settled exactly as without hooks, whatever a hook does. Each hook's calls run one at a time
in the order offered, each bounded by ``hook_timeout``:

* ``async def`` methods run on the event loop, cancelled at the timeout. They must not block (no blocking I/O,
  no ``time.sleep``): that would stall the dispatcher itself; write such hooks as plain methods instead.
* plain methods run in a worker thread, so they may block. A call past the timeout is abandoned (Python cannot stop
  a thread; it runs on), and while :data:`MAX_ABANDONED` calls of one hook are still stuck its new calls are
  dropped, so a hung hook cannot pile up threads.

Exceptions, timeouts and drops are logged (rate-limited per hook) and counted in
``jetbridge_hook_calls_total{hook,event,result}`` (``ok``, ``error``, ``timeout``, ``dropped``). On shutdown the
queued calls get ``hook_timeout`` in all to finish.

With no hooks configured the dispatcher has none (``Dispatcher.hooks is None``) and does no per-task work for them.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import anyio
import structlog
from jetbridge.internal import ConfigError, TaskRecord
from prometheus_client import CollectorRegistry, Counter

from .attempts import Attempt
from .logs import RateLimitedLog
from .states import AttemptOutcome

log = structlog.get_logger("jetbridge.hooks")

#: the entry point group hooks are found in
GROUP = "jetbridge.hooks"
#: the methods a hook may have, one per event
EVENTS = ("before_attempt", "after_attempt", "state_changed")
#: calls waiting for one hook; more are dropped (and counted), never waited for
QUEUE_SIZE = 10_000
#: timed-out calls of a plain-method hook still running in threads, past which its new calls are dropped
MAX_ABANDONED = 4


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """An attempt is about to be sent to its handler (the task is saved ``active``)."""

    dispatcher: str
    queue: str
    #: the task as saved ``active``; ``task.tries`` is this attempt's number
    task: TaskRecord
    subject: str
    #: seconds the attempt may take
    budget: float


@dataclass(frozen=True, slots=True)
class AttemptEnded:
    """An attempt ended; its outcome is about to be saved (see :class:`StateChanged` for what was saved)."""

    dispatcher: str
    queue: str
    task: TaskRecord
    #: ``complete``, ``retry``, ``terminate``, ``timeout``, ``lost``, ``no_handler``, ...
    outcome: str
    error_code: str
    message: str
    #: seconds from the request to the outcome
    duration: float


@dataclass(frozen=True, slots=True)
class StateChanged:
    """This dispatcher saved a new state of a task (``from_state`` is the state it read before; ``""`` for a
    corrupt document it replaced)."""

    dispatcher: str
    queue: str
    #: the task as saved
    task: TaskRecord
    from_state: str
    to_state: str
    reason: str


@dataclass(slots=True)
class _ThreadCall:
    done: bool = False
    abandoned: bool = False


class _Hook:
    """One loaded hook: its methods, its queue of calls and the task that works through them."""

    def __init__(self, name: str, obj: Any, hooks: Hooks) -> None:
        self.name = name
        self.hooks = hooks
        self.methods: dict[str, tuple[Callable[[Any], Any], bool]] = {}
        for event in EVENTS:
            fn = getattr(obj, event, None)
            if callable(fn):
                self.methods[event] = (fn, inspect.iscoroutinefunction(fn))
        self.send, self.receive = anyio.create_memory_object_stream[tuple[str, Any]](QUEUE_SIZE)
        self.abandoned = 0
        self._lock = threading.Lock()
        self.failures = RateLimitedLog(log, "hook_failed", every=10.0)

    def offer(self, event: str, payload: Any) -> None:
        if event not in self.methods:
            return
        try:
            self.send.send_nowait((event, payload))
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            self._failed(event, payload, "dropped", "the hook's queue is full (it is slow or stuck)")

    async def run(self) -> None:
        async with self.receive:
            async for event, payload in self.receive:
                await self._call(event, payload)

    async def _call(self, event: str, payload: Any) -> None:
        fn, is_async = self.methods[event]
        if not is_async and self.abandoned >= MAX_ABANDONED:
            self._failed(event, payload, "dropped", f"{self.abandoned} earlier calls are still stuck")
            return
        call = _ThreadCall()
        with anyio.move_on_after(self.hooks.timeout) as scope:
            try:
                if is_async:
                    await fn(payload)
                else:
                    await anyio.to_thread.run_sync(self._in_thread, fn, payload, call, abandon_on_cancel=True)
            except Exception as exc:  # noqa: BLE001 - a failing hook never touches the task
                self._failed(event, payload, "error", f"{type(exc).__name__}: {exc}")
                return
        if scope.cancelled_caught:
            if not is_async:
                with self._lock:
                    if not call.done:  # still running in its thread: abandoned
                        call.abandoned = True
                        self.abandoned += 1
            self._failed(event, payload, "timeout", f"the call took longer than {self.hooks.timeout:g}s")
            return
        self.hooks.count(self.name, event, "ok")

    def _in_thread(self, fn: Callable[[Any], Any], payload: Any, call: _ThreadCall) -> None:
        try:
            fn(payload)
        finally:
            with self._lock:
                call.done = True
                if call.abandoned:
                    self.abandoned -= 1

    def _failed(self, event: str, payload: Any, result: str, error: str) -> None:
        self.hooks.count(self.name, event, result)
        task = getattr(payload, "task", None)
        self.failures.warning(hook=self.name, hook_event=event, result=result, error=error,
                              task_id=getattr(task, "id", None), queue=getattr(payload, "queue", None),
                              hint="the task is not affected; fix or remove the hook")


class Hooks:
    """The hooks of one dispatcher: the dispatcher offers events, each hook's task calls it."""

    def __init__(self, loaded: list[tuple[str, Any]], *, dispatcher_id: str, timeout: float,
                 registry: CollectorRegistry) -> None:
        self.dispatcher = dispatcher_id
        self.timeout = timeout
        self._calls = Counter("jetbridge_hook_calls", "Dispatcher hook calls, by hook, event and result",
                              ["hook", "event", "result"], registry=registry)
        self.hooks = [_Hook(name, obj, self) for name, obj in loaded]
        self._done = anyio.Event()

    def count(self, hook: str, event: str, result: str) -> None:
        self._calls.labels(hook, event, result).inc()

    async def run(self) -> None:
        """Work through the calls until :meth:`close`."""
        try:
            async with anyio.create_task_group() as tg:
                for hook in self.hooks:
                    tg.start_soon(hook.run)
        finally:
            self._done.set()

    async def close(self) -> None:
        """Offer nothing more; give the queued calls ``timeout`` seconds in all to finish."""
        for hook in self.hooks:
            hook.send.close()
        with anyio.move_on_after(self.timeout):
            await self._done.wait()

    def _offer(self, event: str, payload: Any) -> None:
        for hook in self.hooks:
            hook.offer(event, payload)

    # What the dispatcher calls: cheap, synchronous, never raise ------------------------------------------------

    def before_attempt(self, attempt: Attempt) -> None:
        self._offer("before_attempt", AttemptStarted(self.dispatcher, attempt.queue, attempt.task, attempt.subject,
                                                     attempt.budget))

    def after_attempt(self, attempt: Attempt, outcome: AttemptOutcome, duration: float) -> None:
        self._offer("after_attempt", AttemptEnded(self.dispatcher, attempt.queue, attempt.task, outcome.kind,
                                                  outcome.error_code, outcome.message, duration))

    def state_changed(self, queue: str, before: TaskRecord | None, after: TaskRecord, reason: str) -> None:
        self._offer("state_changed", StateChanged(self.dispatcher, queue, after,
                                                  before.state if before is not None else "", after.state, reason))


def load_hooks(selected: tuple[str, ...], *, dispatcher_id: str, timeout: float,
               registry: CollectorRegistry) -> Hooks | None:
    """The hooks named in ``selected``, loaded from their entry points; None when there are none.

    Raises :class:`ConfigError` naming the hook for one that is not installed, cannot be loaded, or has no hook
    method: a hook the operator asked for never silently goes missing.
    """
    if not selected:
        return None
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    loaded: list[tuple[str, Any]] = []
    for name in selected:
        ep = found.get(name)
        if ep is None:
            installed = ", ".join(sorted(found)) or "none"
            raise ConfigError(f"hook {name!r} is not installed: no entry point {name!r} in group {GROUP} "
                              f"(installed: {installed})")
        try:
            obj = ep.load()
            if isinstance(obj, type):
                obj = obj()
        except Exception as exc:  # noqa: BLE001 - any failure of user code at load time is a config error
            raise ConfigError(f"hook {name!r} ({ep.value}) cannot be loaded: {type(exc).__name__}: {exc}") from None
        if not any(callable(getattr(obj, event, None)) for event in EVENTS):
            raise ConfigError(f"hook {name!r} ({ep.value}) has none of the hook methods {', '.join(EVENTS)}")
        loaded.append((name, obj))
        log.info("hook_loaded", hook=name, target=ep.value,
                 events=[e for e in EVENTS if callable(getattr(obj, e, None))])
    return Hooks(loaded, dispatcher_id=dispatcher_id, timeout=timeout, registry=registry)
