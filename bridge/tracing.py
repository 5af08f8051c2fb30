"""The dispatcher's OpenTelemetry spans: time queued, each attempt, each retry wait (docs/tracing.md).

Every span of a task hangs off the trace context its producer stored in the task (``traceparent``; see
:mod:`jetbridge.tracing`). A task enqueued without one (a producer without tracing, an asyncjobs client) gets a
trace of its own derived from its id, so all its attempts still share one trace, whichever dispatcher runs them.

- ``queued <type>``: from the task's creation (or due time) to its first attempt;
- ``retry wait <type>``: from the end of attempt n-1 (its history entry) to the start of attempt n;
- ``<type> attempt <n>``: the attempt, a client span whose context is sent to the handler as the request's
  ``traceparent``, so the handler's span is its child. It records the task id, queue, type, attempt, outcome and
  what the state machine decided (next state, retry delay).

The spans are built from what the task carries, at the start and end of an attempt: nothing is held between
attempts, so a dispatcher restart or another dispatcher loses nothing. Off (``from_env`` returns None) unless the
``OTEL_*`` variables ask for export (:func:`jetbridge.tracing.enabled`); then the dispatcher only checks for None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from jetbridge import tracing as sdk_tracing
from jetbridge.internal import parse_ns, proto

from .states import AttemptOutcome, Decision

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from .attempts import Attempt

log = structlog.get_logger("jetbridge.dispatcher")


def forwardable(traceparent: str) -> bool:
    """A stored traceparent is producer data: only one the request schema accepts is passed on to handlers."""
    return sdk_tracing.valid_traceparent(traceparent)


def request_traceparent(attempt: Attempt) -> str:
    """The request's ``traceparent``: the attempt span's, else the producer's, else one derived from the task id."""
    if attempt.traceparent:
        return attempt.traceparent
    task = attempt.task
    return task.traceparent if forwardable(task.traceparent) else proto.traceparent_for(task.id, task.tries)


class DispatchTracing:
    """Makes the dispatcher's spans with one tracer."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DispatchTracing | None:
        """Tracing set up from the ``OTEL_*`` variables, or None when they do not ask for it.

        Raises ConfigError (a one-line message) when they ask for it but OpenTelemetry is not installed.
        """
        if not sdk_tracing.configure("jetbridge", environ):
            return None
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        log.info("tracing_on", exporter=environ.get("OTEL_TRACES_EXPORTER") or "otlp", endpoint=endpoint,
                 hint="spans: queued, each attempt, each retry wait (docs/tracing.md)")
        return cls(sdk_tracing.tracer())

    @staticmethod
    def _parent(attempt: Attempt) -> Any:
        """The context of the producer's span (or of the task's derived trace), built directly from the traceparent:
        the propagator's parsing and checks cost more, and the value was checked by :func:`forwardable`."""
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

        task = attempt.task
        tp = task.traceparent if forwardable(task.traceparent) else proto.traceparent_for(task.id, 0)
        parent = SpanContext(int(tp[3:35], 16), int(tp[36:52], 16), is_remote=True, trace_flags=TraceFlags(int(tp[53:55], 16)))
        return set_span_in_context(NonRecordingSpan(parent)) if parent.is_valid else None

    def start(self, attempt: Attempt) -> None:
        """The attempt is about to be sent: emit the wait that led to it and open its span."""
        from opentelemetry.trace import SpanKind

        task, now = attempt.task, time.time_ns()
        parent = self._parent(attempt)
        # Few attributes: the SDK checks each one, and this runs for every task (docs/tracing.md lists them).
        waited = self._waited_since(attempt)
        if waited is not None:
            name, since = waited
            wait = self._tracer.start_span(f"{name} {task.type}", context=parent, start_time=min(since, now),
                                           attributes={"jetbridge.task.id": task.id, "jetbridge.attempt": task.tries})
            wait.end(end_time=now)
        span = self._tracer.start_span(
            f"{task.type} attempt {task.tries}", context=parent, kind=SpanKind.CLIENT, start_time=now,
            attributes={"jetbridge.task.id": task.id, "jetbridge.task.type": task.type, "jetbridge.queue": attempt.queue,
                        "jetbridge.attempt": task.tries, "jetbridge.budget_ms": int(attempt.budget * 1000)})
        attempt.span = span
        attempt.traceparent = sdk_tracing.traceparent_of(span) or ""

    @staticmethod
    def _waited_since(attempt: Attempt) -> tuple[str, int] | None:
        """(span name, start) of the wait before this attempt: queued before the first, retry wait before others."""
        task = attempt.task
        try:
            if task.tries <= 1:
                return "queued", task.due_ns or task.created_ns
            entries = task.history.attempts if task.history is not None else []
            if entries and entries[-1].n == task.tries - 1 and entries[-1].end:
                return "retry wait", parse_ns(entries[-1].end)
        except ValueError:
            pass
        return None

    @staticmethod
    def end(attempt: Attempt, outcome: AttemptOutcome | None, decision: Decision | None) -> None:
        """Close the attempt's span with how it ended; a second call does nothing."""
        span, attempt.span = attempt.span, None
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        if outcome is None:
            span.set_attribute("jetbridge.outcome", "dispatch_failed")
            span.set_status(Status(StatusCode.ERROR, "the dispatcher failed while settling the attempt"))
        else:
            span.set_attribute("jetbridge.outcome", outcome.kind)
            if outcome.kind != "complete":
                span.set_attribute("jetbridge.error.code", outcome.error_code or outcome.kind)
                span.set_status(Status(StatusCode.ERROR, (outcome.message or outcome.kind)[:512]))
            if outcome.extra.get("sdk"):
                span.set_attribute("jetbridge.handler.sdk", str(outcome.extra["sdk"]))
        if decision is not None and decision.state is not None:
            span.set_attribute("jetbridge.next_state", decision.state.value)
            if decision.delay:
                span.set_attribute("jetbridge.retry_delay_ms", int(decision.delay * 1000))
        span.end()
