/**
 * Prometheus metrics for Jetbridge handlers (issue 20), as the separate entry point `jetbridge/prometheus`: only
 * services that import it need `prom-client` (an optional peer dependency).
 *
 * The metrics are those of the Python SDK's `prometheus_metrics()`, so one dashboard serves handlers in every
 * language:
 *
 * - `jetbridge_handler_attempts_total{type,outcome}`: attempts that ended;
 * - `jetbridge_handler_duration_seconds{type,outcome}`: their duration;
 * - `jetbridge_handler_in_progress{type}`: attempts running now.
 *
 *   import { register } from "prom-client";
 *   import { prometheusMetrics } from "jetbridge/prometheus";
 *   service.use(prometheusMetrics()); // serve register.metrics() on /metrics
 */
import { Counter, Gauge, Histogram, register as globalRegistry, type Registry } from "prom-client";

import { Retry, Terminate } from "./errors.js";
import type { Middleware } from "./middleware.js";
import type { Task } from "./types.js";

/** The duration histogram's bucket bounds in seconds (the Python SDK's): from a millisecond to an hour. */
export const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/** How an attempt ended, the value of the `outcome` label. */
export type Outcome = "ok" | "retry" | "terminate" | "error" | "cancelled";

/**
 * The outcome of an attempt of `task` that threw `err` (`undefined`: it returned). Retry and Terminate give their
 * own; anything else thrown after the task's signal aborted is `cancelled` and any other error `error`, as the
 * built-in recovery replies them (a retry with code `cancelled` or `handler_error`).
 */
export function outcomeOf(task: Task, err: unknown, threw: boolean): Outcome {
  if (!threw) return "ok";
  if (err instanceof Retry) return "retry";
  if (err instanceof Terminate) return "terminate";
  return task.signal.aborted ? "cancelled" : "error";
}

export interface PrometheusOptions {
  /** The registry to register the metrics in, instead of prom-client's global `register`. */
  registry?: Registry;
}

interface Collectors {
  attempts: Counter<"type" | "outcome">;
  duration: Histogram<"type" | "outcome">;
  inProgress: Gauge<"type">;
}

/** The metric `name` already in `registry` (another service of this process made it), or a new one. */
function shared<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

function collectors(registry: Registry): Collectors {
  const registers = [registry];
  return {
    attempts: shared(registry, "jetbridge_handler_attempts_total", () => new Counter({
      name: "jetbridge_handler_attempts_total",
      help: "Handler attempts that ended, by task type and outcome",
      labelNames: ["type", "outcome"] as const,
      registers,
    })),
    duration: shared(registry, "jetbridge_handler_duration_seconds", () => new Histogram({
      name: "jetbridge_handler_duration_seconds",
      help: "Handler attempt duration by outcome",
      labelNames: ["type", "outcome"] as const,
      buckets: BUCKETS,
      registers,
    })),
    inProgress: shared(registry, "jetbridge_handler_in_progress", () => new Gauge({
      name: "jetbridge_handler_in_progress",
      help: "Handler attempts running now",
      labelNames: ["type"] as const,
      registers,
    })),
  };
}

/**
 * The metrics middleware. Calling it again with the same registry (two services of one process) shares the
 * metrics already registered there.
 */
export function prometheusMetrics(options: PrometheusOptions = {}): Middleware {
  const metrics = collectors(options.registry ?? globalRegistry);
  return async (task, next) => {
    const running = metrics.inProgress.labels(task.type);
    running.inc();
    const started = performance.now();
    let threw = false;
    let failure: unknown;
    try {
      return await next();
    } catch (err) {
      threw = true;
      failure = err;
      throw err;
    } finally {
      running.dec();
      const labels = { type: task.type, outcome: outcomeOf(task, failure, threw) };
      metrics.attempts.inc(labels);
      metrics.duration.observe(labels, (performance.now() - started) / 1000);
    }
  };
}
