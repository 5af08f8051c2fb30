/**
 * OpenTelemetry tracing for Jetbridge handlers (issue 20), as the separate entry point `jetbridge/otel`: only
 * services that import it need the OpenTelemetry packages (optional peer dependencies).
 *
 * The dispatcher sends each attempt's W3C `traceparent` in the request; {@link tracing} starts a server span
 * `process <type>` as its child, with the task's id, type, queue and attempt, and records how the attempt ended
 * (`jetbridge.outcome`: complete, retry, terminate or cancelled, with `jetbridge.error.code` and an error status).
 * The span is active while the handler runs, so spans it starts are children.
 *
 *   import { setupTracing, tracing } from "jetbridge/otel";
 *   const provider = setupTracing("mailer"); // undefined unless the OTEL_* variables ask for export
 *   service.use(tracing());
 *   ...
 *   await provider?.shutdown(); // send what is left
 */
import {
  SpanKind,
  SpanStatusCode,
  context,
  defaultTextMapGetter,
  trace,
  type Span,
  type TracerProvider,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

import { SDK_VERSION } from "./constants.js";
import { Cancelled, Retry, Terminate } from "./errors.js";
import type { Middleware } from "./middleware.js";

/** The instrumentation scope of the middleware's spans. */
export const SCOPE = "jetbridge";

/**
 * Whether the environment asks for trace export: `OTEL_TRACES_EXPORTER` set to anything but `none`, or an OTLP
 * endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set; never when
 * `OTEL_SDK_DISABLED` is `true`. The dispatcher and every Jetbridge library apply the same rule.
 */
export function tracingEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const get = (name: string): string => (env[name] ?? "").trim();
  if (get("OTEL_SDK_DISABLED").toLowerCase() === "true") return false;
  const exporter = get("OTEL_TRACES_EXPORTER");
  if (exporter !== "") return exporter.toLowerCase() !== "none";
  return get("OTEL_EXPORTER_OTLP_ENDPOINT") !== "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") !== "";
}

/**
 * When {@link tracingEnabled}: registers a global tracer provider that batches spans (`OTEL_BSP_*`) to OTLP/HTTP
 * protobuf (`OTEL_EXPORTER_OTLP_*`), and returns it; call `shutdown()` on it before exiting. Otherwise returns
 * undefined and registers nothing. `serviceName` applies unless `OTEL_SERVICE_NAME` names the service.
 */
export function setupTracing(serviceName: string): NodeTracerProvider | undefined {
  if (!tracingEnabled()) return undefined;
  const resource = defaultResource()
    .merge(resourceFromAttributes({ "service.name": serviceName }))
    .merge(detectResources({ detectors: [envDetector] })); // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
  const provider = new NodeTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  provider.register();
  return provider;
}

export interface TracingOptions {
  /** The provider to use instead of the global one. */
  tracerProvider?: TracerProvider;
}

function record(span: Span, err: unknown): void {
  let outcome = "retry";
  let code = "handler_error";
  if (err instanceof Retry) {
    code = err.code;
  } else if (err instanceof Terminate) {
    outcome = "terminate";
    code = err.code;
  } else if (err instanceof Cancelled) {
    outcome = "cancelled";
    code = "cancelled";
  } else if (err instanceof Error) {
    span.recordException(err);
  }
  span.setAttributes({ "jetbridge.outcome": outcome, "jetbridge.error.code": code });
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? `${code}: ${err.message}` : code });
}

/** The tracing middleware: one server span per attempt, the child of the request's `traceparent`. */
export function tracing(options: TracingOptions = {}): Middleware {
  const propagator = new W3CTraceContextPropagator();
  return async (task, next) => {
    const tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer(SCOPE, SDK_VERSION);
    const base = context.active();
    const parent = task.traceparent
      ? propagator.extract(base, { traceparent: task.traceparent }, defaultTextMapGetter)
      : base;
    const attributes = {
      "messaging.system": "jetbridge",
      "jetbridge.task.id": task.id,
      "jetbridge.task.type": task.type,
      "jetbridge.queue": task.queue,
      "jetbridge.attempt": task.attempt,
    };
    return tracer.startActiveSpan(`process ${task.type}`, { kind: SpanKind.SERVER, attributes }, parent, async (span) => {
      try {
        const result = await next();
        span.setAttribute("jetbridge.outcome", "complete"); // status stays unset on success (OpenTelemetry's rule)
        return result;
      } catch (err) {
        record(span, err);
        throw err;
      } finally {
        span.end();
      }
    });
  };
}
