"""Middleware chains around task handlers: the types, pattern groups, composition and the built-in recovery.

A middleware is ``async def mw(task, next) -> result``: it sees the :class:`~jetbridge.Task` before the handler
does and what the handler returned (or raised) after. It may short-circuit by raising
:class:`~jetbridge.Retry` / :class:`~jetbridge.Terminate` or returning a value without awaiting ``next(task)``,
change the result, or time and log the call. The semantics match the Go, Rust and Node libraries:

* ``Service.use(a, b)`` wraps every handler, the first registered outermost;
* ``Service.use_for("email:*", c)`` wraps the handlers of matching task types, *inside* every ``use`` middleware
  (whatever the order of the calls), in registration order among themselves;
* the built-in :func:`recover` is always outermost, so every other middleware sees a handler's exceptions as
  raised, and a crashing middleware cannot take the service down either.

Patterns match the *request's* task type (so a catch-all ``"*"`` handler gets the groups of each type it serves),
with :func:`fnmatch.fnmatchcase` (``*``, ``?``, ``[seq]``; case-sensitive).
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import structlog

from ._errors import ConfigError, HandlerSignal, Retry

if TYPE_CHECKING:
    from ._service import Task

log = structlog.get_logger("jetbridge.service")

#: The rest of the chain: later middleware, then the handler.
Next = Callable[["Task"], Awaitable[Any]]
#: One link of the chain: ``async def mw(task, next)``.
Middleware = Callable[["Task", Next], Awaitable[Any]]

#: characters of a task type (``_names._NAME_RE``) plus the fnmatch wildcards
_PATTERN_CHARS = re.compile(r"[a-zA-Z0-9_:\-*?\[\]!]+")
#: distinct task types whose chains one handler caches (a catch-all may see many)
_CACHE_LIMIT = 1024


def check_pattern(pattern: object) -> re.Pattern[str]:
    """The compiled form of a ``use_for`` pattern, or :class:`ConfigError` saying what a pattern looks like."""
    if not isinstance(pattern, str) or not _PATTERN_CHARS.fullmatch(pattern) or not _brackets_balanced(pattern):
        raise ConfigError(f"middleware pattern {pattern!r} is not a task type pattern like 'email:*', 'image:?' "
                          "or 'report:[ab]*' (letters, digits, '_', '-', ':' and the wildcards * ? [...])")
    return re.compile(fnmatch.translate(pattern))


def _brackets_balanced(pattern: str) -> bool:
    depth = 0
    for c in pattern:
        if c == "[":
            if depth:
                return False
            depth = 1
        elif c == "]":
            if not depth:
                return False
            depth = 0
    return depth == 0


def check_middleware(mw: object) -> Middleware:
    """``mw`` if it can be a middleware; :class:`ConfigError` for the usual mistakes (a sync function, a factory
    passed without calling it)."""
    if not callable(mw):
        raise ConfigError(f"middleware must be an async function (task, next), got {type(mw).__name__}")
    if inspect.isfunction(mw) and not inspect.iscoroutinefunction(mw):
        raise ConfigError(f"middleware {mw.__qualname__} must be 'async def {mw.__name__}(task, next)' "
                          "(a built-in like log_attempts needs calling: log_attempts())")
    return cast(Middleware, mw)  # a callable; its signature shows when it runs


class Chains:
    """The middleware a service registered, and the handler chains built from them."""

    def __init__(self) -> None:
        self._global: list[Middleware] = []
        self._grouped: list[tuple[re.Pattern[str], Middleware]] = []

    def use(self, middleware: tuple[object, ...]) -> None:
        self._global.extend(check_middleware(mw) for mw in middleware)

    def use_for(self, pattern: str, middleware: tuple[object, ...]) -> None:
        compiled = check_pattern(pattern)
        self._grouped.extend((compiled, check_middleware(mw)) for mw in middleware)

    def for_type(self, task_type: str) -> list[Middleware]:
        """The chain of ``task_type``, outermost first: recovery, the global ones, the matching groups."""
        return [recover(), *self._global, *(mw for p, mw in self._grouped if p.match(task_type))]

    def wrap(self, handler: Next) -> Next:
        """``handler`` behind its middleware; the chain is picked by each request's task type, and cached."""
        cache: dict[str, Next] = {}

        async def run(task: Task) -> Any:
            chain = cache.get(task.type)
            if chain is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                chain = cache[task.type] = compose(self.for_type(task.type), handler)
            return await chain(task)

        return run


def compose(chain: list[Middleware], handler: Next) -> Next:
    """``handler`` wrapped in ``chain``, whose first middleware runs outermost."""
    call = handler
    for mw in reversed(chain):
        call = _link(mw, call)
    return call


def _link(mw: Middleware, rest: Next) -> Next:
    async def call(task: Task) -> Any:
        return await mw(task, rest)

    return call


def recover() -> Middleware:
    """Exception recovery (built in, always outermost): :class:`Retry` and :class:`Terminate` pass through, any
    other exception becomes a ``retry`` reply with code ``handler_error`` (and is logged), so a crashing handler
    or middleware never takes the service down. Add it further in to recover closer to the handler."""

    async def recovering(task: Task, call_next: Next) -> Any:
        try:
            return await call_next(task)
        except HandlerSignal:
            raise
        except Exception as exc:  # noqa: BLE001 - handler failures become retryable replies
            log.warning("handler_failed", task_id=task.id, type=task.type, attempt=task.attempt, error=repr(exc))
            raise Retry(f"{type(exc).__name__}: {exc}", code="handler_error") from exc

    return recovering
