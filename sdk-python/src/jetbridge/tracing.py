"""OpenTelemetry tracing: one trace from the producer through the dispatcher to the handler.

The W3C ``traceparent`` the protocol carries joins the pieces (docs/tracing.md):

- :class:`~jetbridge.Producer` stores the current trace context in the task it enqueues (member ``traceparent``)
  inside a producer span ``enqueue <type>``, whenever an OpenTelemetry SDK is set up in the process;
- the dispatcher's spans (queued, each attempt, each retry wait) are children of it, and each attempt's span is
  sent to the handler as the request's ``traceparent``;
- :func:`middleware` starts the handler's span ``process <type>`` as a child of that.

This module needs the optional extra ``jetbridge-sdk[otel]``; nothing here is imported unless tracing is used, and a
process without OpenTelemetry pays one dictionary look-up per enqueue. :func:`configure` sets up OTLP/HTTP export
from the standard ``OTEL_*`` variables under the rule of :func:`enabled` (the dispatcher uses the same rule).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, Retry, Terminate
from ._middleware import Next
from ._wire import TRACEPARENT_PATTERN

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from ._service import Task

#: the instrumentation scope of every Jetbridge span
SCOPE = "jetbridge"
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for trace export.

    On when ``OTEL_TRACES_EXPORTER`` is set to anything but ``none``, or when an OTLP endpoint is set
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); always off when
    ``OTEL_SDK_DISABLED`` is ``true``. Every Jetbridge library and the dispatcher apply this same rule.
    """

    def var(name: str) -> str:
        return environ.get(name, "").strip()

    if var("OTEL_SDK_DISABLED").lower() == "true":
        return False
    exporter = var("OTEL_TRACES_EXPORTER")
    if exporter:
        return exporter.lower() != "none"
    return bool(var("OTEL_EXPORTER_OTLP_ENDPOINT") or var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Set up trace export from the ``OTEL_*`` variables, if :func:`enabled`; returns whether it did.

    Installs a global SDK tracer provider with a batch processor (``OTEL_BSP_*``) and the exporter
    ``OTEL_TRACES_EXPORTER`` names: ``otlp`` (the default: OTLP/HTTP protobuf, configured by
    ``OTEL_EXPORTER_OTLP_*``) or ``console``. ``service_name`` applies unless ``OTEL_SERVICE_NAME`` or
    ``OTEL_RESOURCE_ATTRIBUTES`` name the service. A provider the application installed itself is kept.
    ``environ`` decides whether and which exporter; the SDK reads the rest (endpoint, headers, batching, resource)
    from the process environment, as it always does.

    Raises:
        ConfigError: the OpenTelemetry packages are missing, or the exporter or protocol is not supported.
    """
    if not enabled(environ):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        raise ConfigError("tracing is on (OTEL_* variables) but OpenTelemetry is not installed: "
                          "pip install 'jetbridge-sdk[otel]'") from None
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True
    exporter: SpanExporter
    kind = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif kind == "otlp":
        protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                    or "http/protobuf").strip()
        if protocol != "http/protobuf":
            raise ConfigError(f"OTLP protocol {protocol!r} is not supported: Jetbridge exports http/protobuf "
                              "(set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={kind!r} is not supported: use otlp, console or none")
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def shutdown() -> None:
    """Export the spans still buffered and stop the provider :func:`configure` installed (at exit it happens
    by itself; call this before ``os._exit`` or in tests)."""
    if "opentelemetry.trace" not in sys.modules:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


_provider: TracerProvider | None = None


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Make Jetbridge's spans in this process use ``provider`` instead of the global one (None: the global again)."""
    global _provider
    _provider = provider


def tracer() -> Tracer:
    """The tracer of Jetbridge's spans: from :func:`use_tracer_provider`'s provider, else the global one."""
    from opentelemetry import trace

    from ._service import SDK_VERSION

    return trace.get_tracer(SCOPE, SDK_VERSION, tracer_provider=_provider)


def traceparent_of(span: Span) -> str | None:
    """The W3C traceparent naming ``span`` (as the parent of what follows), or None for an invalid span."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def valid_traceparent(value: str) -> bool:
    """A traceparent the request schema accepts (version ``ff`` is invalid in W3C trace context)."""
    return bool(value) and _TRACEPARENT.match(value) is not None and not value.startswith("ff")


def parent_context(traceparent: str | None) -> Any:
    """The OpenTelemetry context a traceparent names (an empty one for None or a malformed value)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent} if traceparent else {})


def current_traceparent() -> str | None:
    """The traceparent of the current span, when OpenTelemetry is in use in this process; else None.

    Costs one dictionary look-up when nothing imported OpenTelemetry: tracing is a choice of the application.
    """
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    return traceparent_of(trace.get_current_span())


@contextmanager
def enqueue_span(task_type: str, queue: str) -> Iterator[Span | None]:
    """The producer span around one enqueue (current while it lasts), or None when OpenTelemetry is not in use."""
    if "opentelemetry.trace" not in sys.modules:
        yield None
        return
    from opentelemetry.trace import SpanKind

    attributes = {"messaging.system": "jetbridge", "messaging.operation.type": "send",
                  "messaging.destination.name": queue, "jetbridge.queue": queue, "jetbridge.task.type": task_type}
    with tracer().start_as_current_span(f"enqueue {task_type}", kind=SpanKind.PRODUCER,
                                        attributes=attributes) as span:
        yield span


async def middleware(task: Task, next: Next) -> Any:
    """Handler middleware: the attempt's span ``process <type>``, a child of the request's ``traceparent``.

    Records the task id, type, queue and attempt, and how the attempt ended (``jetbridge.outcome``: complete,
    retry, terminate or cancelled, with ``jetbridge.error.code``); the span is current while the handler runs, so
    spans it starts are children. With no SDK set up (see :func:`configure`) the spans are no-ops.
    """
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes: dict[str, str | int] = {"messaging.system": "jetbridge", "jetbridge.task.id": task.id, "jetbridge.task.type": task.type,
                  "jetbridge.queue": task.queue, "jetbridge.attempt": task.attempt}
    with tracer().start_as_current_span(f"process {task.type}", context=parent_context(task.traceparent),
                                        kind=SpanKind.SERVER, attributes=attributes, record_exception=False,
                                        set_status_on_exception=False) as span:
        try:
            result = await next(task)
        except (Retry, Terminate) as exc:
            outcome = "retry" if isinstance(exc, Retry) else "terminate"
            span.set_attributes({"jetbridge.outcome": outcome, "jetbridge.error.code": exc.code})
            span.set_status(Status(StatusCode.ERROR, f"{exc.code}: {exc.message}"))
            raise
        except Exception as exc:
            span.record_exception(exc)
            span.set_attributes({"jetbridge.outcome": "retry", "jetbridge.error.code": "handler_error"})
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        except BaseException:
            span.set_attributes({"jetbridge.outcome": "cancelled", "jetbridge.error.code": "cancelled"})
            span.set_status(Status(StatusCode.ERROR, f"attempt cancelled ({task.cancel_reason or 'timeout'})"))
            raise
        span.set_attribute("jetbridge.outcome", "complete")
        return result
