import assert from "node:assert/strict";
import { test } from "node:test";

import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";

import { Retry, type Task } from "../src/index.js";
import { tracing, tracingEnabled } from "../src/otel.js";

test("tracingEnabled follows the OTEL_* rule", () => {
  assert.equal(tracingEnabled({}), false);
  assert.equal(tracingEnabled({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318" }), true);
  assert.equal(tracingEnabled({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://x:4318/v1/traces" }), true);
  assert.equal(tracingEnabled({ OTEL_TRACES_EXPORTER: "otlp" }), true);
  assert.equal(tracingEnabled({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://x" }), false);
  assert.equal(tracingEnabled({ OTEL_SDK_DISABLED: "TRUE", OTEL_TRACES_EXPORTER: "otlp" }), false);
});

test("the middleware continues the request's trace and records the outcome", async () => {
  const exporter = new InMemorySpanExporter();
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const mw = tracing({ tracerProvider: provider });
  const task = {
    id: "t1", type: "email:send", queue: "Q", attempt: 2,
    traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  } as unknown as Task;
  await assert.rejects(async () => mw(task, async () => { throw new Retry("busy", "try later"); }), Retry);
  assert.equal(await mw(task, async () => 7), 7);
  const [failed, ok] = exporter.getFinishedSpans();
  assert.equal(failed!.name, "process email:send");
  assert.equal(failed!.spanContext().traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
  assert.equal(failed!.parentSpanContext?.spanId, "00f067aa0ba902b7");
  assert.equal(failed!.attributes["jetbridge.outcome"], "retry");
  assert.equal(failed!.attributes["jetbridge.error.code"], "busy");
  assert.equal(failed!.attributes["jetbridge.attempt"], 2);
  assert.equal(ok!.attributes["jetbridge.outcome"], "complete");
});
