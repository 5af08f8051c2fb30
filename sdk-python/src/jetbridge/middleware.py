"""Built-in middleware for :meth:`jetbridge.Service.use` and :meth:`~jetbridge.Service.use_for`.

::

    from jetbridge.middleware import log_attempts, prometheus_metrics, timeout

    service.use(log_attempts(), prometheus_metrics())
    service.use_for("report:*", timeout(30))

:func:`recover` is already the outermost link of every chain; the others are opt-in. Each built-in is a factory:
call it to get the middleware.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from ._errors import Retry, Terminate
from ._middleware import Middleware, Next, recover

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ._service import Task

__all__ = ["Middleware", "Next", "log_attempts", "outcome_of", "prometheus_metrics", "recover", "timeout"]


def outcome_of(exc: BaseException | None) -> tuple[str, str | None]:
    """How an attempt ended, as ``(outcome, error code)``, from what the rest of the chain raised (None: returned).

    ``ok``; ``retry`` and ``terminate`` with the signal's code; ``error`` for any other exception (the built-in
    recovery replies ``retry`` with code ``handler_error``); ``cancelled`` when the attempt was cancelled (by the
    dispatcher, its budget or fencing: the service replies ``retry`` with code ``cancelled``).
    """
    if exc is None:
        return "ok", None
    if isinstance(exc, Retry):
        return "retry", exc.code
    if isinstance(exc, Terminate):
        return "terminate", exc.code
    if isinstance(exc, Exception):
        return "error", "handler_error"
    return "cancelled", "cancelled"


async def _observed(task: Task, call_next: Next, done: Callable[[str, str | None, float], None]) -> Any:
    """Run the rest of the chain and tell ``done`` how the attempt ended (:func:`outcome_of`) and how long it took,
    whether it returned or raised: the one shape of the observing built-ins (logging, metrics)."""
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        return await call_next(task)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        outcome, code = outcome_of(failure)
        done(outcome, code, time.perf_counter() - started)


def log_attempts(logger: Any = None) -> Middleware:
    """One structured log line per attempt when it ends (event ``attempt_done``): task id, type, queue, attempt,
    outcome (see :func:`outcome_of`), error code and duration; INFO for ``ok``, WARNING otherwise.

    ``logger`` is a structlog logger (default ``structlog.get_logger("jetbridge.attempts")``), so the line goes
    wherever the process's structlog configuration sends it (JSON, console).
    """
    out = logger if logger is not None else structlog.get_logger("jetbridge.attempts")

    async def logging(task: Task, call_next: Next) -> Any:
        def done(outcome: str, code: str | None, seconds: float) -> None:
            fields: dict[str, Any] = {
                "task_id": task.id, "type": task.type, "queue": task.queue, "attempt": task.attempt,
                "outcome": outcome, "duration_ms": round(seconds * 1000, 3)}
            if code is not None:
                fields["code"] = code
            if outcome == "cancelled":
                fields["reason"] = task.cancel_reason
            if outcome == "ok":
                out.info("attempt_done", **fields)
            else:
                out.warning("attempt_done", **fields)

        return await _observed(task, call_next, done)

    return logging


def timeout(seconds: float | None = None, *, margin: float = 0.0) -> Middleware:
    """Cancel the rest of the chain after ``seconds``, or ``margin`` seconds before the attempt's budget runs out,
    whichever comes first: a per-type limit tighter than the queue's, or an early stop that leaves the reply time to
    reach the dispatcher before the budget ends (the service's own budget cancel replies only once it has passed).

    On expiry the handler sees an anyio cancellation with ``task.cancel_reason == "timeout"``; if it lets it
    propagate the attempt replies ``retry`` with code ``cancelled``. A handler that shields itself and returns
    still has its result sent (replies are never suppressed).
    """
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"timeout(seconds) must be a positive number of seconds, got {seconds!r}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"timeout(margin=) must be zero or more seconds, got {margin!r}")

    async def limited(task: Task, call_next: Next) -> Any:
        limit = task.remaining() - margin
        if seconds is not None:
            limit = min(limit, seconds)
        with anyio.CancelScope() as scope:
            # A loop timer rather than a task: it costs no task per attempt, and it sets the reason before the
            # handler sees the cancellation (a CancelScope deadline cannot). nats-py runs on asyncio only.
            timer = asyncio.get_running_loop().call_later(max(0.0, limit), _expire, task, scope)
            try:
                return await call_next(task)
            finally:
                timer.cancel()
        raise Retry(f"attempt cancelled (timeout middleware: {max(0.0, limit):.3f}s passed)", code="cancelled")

    return limited


def _expire(task: Task, scope: anyio.CancelScope) -> None:
    if task.cancel_reason is None:
        task.cancel_reason = "timeout"
    scope.cancel()


def prometheus_metrics(registry: CollectorRegistry | None = None) -> Middleware:
    """Prometheus metrics per task type, for services that expose ``/metrics`` (e.g. with
    ``prometheus_client.start_http_server``). Needs the ``metrics`` extra (``pip install 'jetbridge-sdk[metrics]'``).

    * ``jetbridge_handler_attempts_total{type,outcome}``: attempts that ended, by :func:`outcome_of`;
    * ``jetbridge_handler_duration_seconds{type,outcome}``: their duration;
    * ``jetbridge_handler_in_progress{type}``: attempts running now.

    ``registry`` defaults to prometheus_client's global one; calling this again with the same registry shares its
    metrics.
    """
    from ._prometheus import collectors  # the optional dependency is imported only when asked for

    metrics = collectors(registry)

    async def measured(task: Task, call_next: Next) -> Any:
        running = metrics.in_progress.labels(task.type)
        running.inc()

        def done(outcome: str, _code: str | None, seconds: float) -> None:
            running.dec()
            metrics.attempts.labels(task.type, outcome).inc()
            metrics.duration.labels(task.type, outcome).observe(seconds)

        return await _observed(task, call_next, done)

    return measured
