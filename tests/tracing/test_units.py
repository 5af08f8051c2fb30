"""Tracing in one process: the enabling rule, the Python middleware, and the dispatcher's spans with an in-memory
exporter (the OTLP path across processes is tests/tracing/test_one_trace.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import jetbridge
import pytest
from jetbridge import tracing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bridge.tracing import DispatchTracing, forwardable
from tests.harness import Harness


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Jetbridge's spans go to memory while the test runs (no global provider: other tests stay untraced)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
    ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, False),
])
def test_the_enabling_rule(env: dict[str, str], on: bool) -> None:
    assert tracing.enabled(env) is on


def test_unsupported_settings_are_one_line_errors() -> None:
    with pytest.raises(jetbridge.ConfigError, match="OTEL_TRACES_EXPORTER='zipkin' is not supported"):
        tracing.configure("x", {"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(jetbridge.ConfigError, match="OTLP protocol 'grpc' is not supported"):
        tracing.configure("x", {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_the_dispatcher_is_off_without_otel_variables() -> None:
    assert DispatchTracing.from_env({}) is None


@pytest.mark.parametrize(("value", "ok"), [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
    ("", False), ("00-xyz", False), ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
])
def test_only_valid_stored_traceparents_are_forwarded(value: str, ok: bool) -> None:
    assert forwardable(value) is ok


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


@pytest.mark.anyio
async def test_one_trace_in_process(h: Harness, spans: InMemorySpanExporter) -> None:
    """Producer span -> dispatcher spans -> handler span, with a retried first attempt."""

    async def work(task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            raise jetbridge.Retry("not yet", code="planned_failure", after=0.01)
        return "ok"

    async def handle(task: jetbridge.Task) -> Any:
        return await tracing.middleware(task, work)

    kind = f"{h.unique}:py"
    async with h.service({kind: handle}), h.dispatcher() as dispatcher:
        dispatcher.tracing = DispatchTracing(tracing.tracer())
        record = await h.run(kind, {})
    assert record.state == "complete" and record.tries == 2
    got = by_name(spans.get_finished_spans())
    root = got[f"enqueue {kind}"]
    assert root.parent is None and record.traceparent == tracing.traceparent_of(root)
    for name in (f"queued {kind}", f"{kind} attempt 1", f"retry wait {kind}", f"{kind} attempt 2"):
        assert got[name].parent is not None and got[name].parent.span_id == root.context.span_id, name
        assert got[name].context.trace_id == root.context.trace_id
    handlers = [s for s in spans.get_finished_spans() if s.name == f"process {kind}"]
    assert [s.attributes["jetbridge.outcome"] for s in handlers] == ["retry", "complete"]
    for n, span in enumerate(handlers, 1):
        assert span.parent is not None and span.parent.span_id == got[f"{kind} attempt {n}"].context.span_id
    first = got[f"{kind} attempt 1"].attributes
    assert first["jetbridge.outcome"] == "retry" and first["jetbridge.error.code"] == "planned_failure"
    assert first["jetbridge.task.id"] == record.id and first["jetbridge.queue"] == h.queue
    assert first["jetbridge.next_state"] == "retry"
    assert got[f"{kind} attempt 2"].attributes["jetbridge.next_state"] == "complete"


@pytest.mark.anyio
async def test_a_dispatcher_without_tracing_passes_the_producers_context_on(
    h: Harness, spans: InMemorySpanExporter,
) -> None:
    seen: list[str | None] = []

    async def handle(task: jetbridge.Task) -> Any:
        seen.append(task.traceparent)
        return "ok"

    kind = f"{h.unique}:off"
    async with h.service({kind: handle}), h.dispatcher() as dispatcher:
        assert dispatcher.tracing is None
        record = await h.run(kind, {})
    assert record.traceparent and seen == [record.traceparent]
    assert [s.name for s in spans.get_finished_spans()] == [f"enqueue {kind}"]


class Failure(Exception):
    pass


@pytest.mark.anyio
@pytest.mark.parametrize(("raised", "outcome", "code"), [
    (None, "complete", None),
    (jetbridge.Retry("busy", code="smtp_busy"), "retry", "smtp_busy"),
    (jetbridge.Terminate("bad", code="bad_address"), "terminate", "bad_address"),
    (Failure("boom"), "retry", "handler_error"),
])
async def test_the_middleware_records_each_outcome(spans: InMemorySpanExporter, raised: Exception | None,
                                                   outcome: str, code: str | None) -> None:
    task: Any = SimpleNamespace(id="t1", type="email:send", queue="Q", attempt=3, cancel_reason=None,
                                traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")

    async def handler(_: Any) -> Any:
        if raised is not None:
            raise raised
        return "ok"

    if raised is None:
        assert await tracing.middleware(task, handler) == "ok"
    else:
        with pytest.raises(type(raised)):
            await tracing.middleware(task, handler)
    (span,) = spans.get_finished_spans()
    assert span.name == "process email:send" and span.kind is SpanKind.SERVER
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.attributes is not None
    assert span.attributes["jetbridge.outcome"] == outcome and span.attributes["jetbridge.attempt"] == 3
    assert span.attributes.get("jetbridge.error.code") == code
    assert span.status.status_code is (StatusCode.UNSET if raised is None else StatusCode.ERROR)
