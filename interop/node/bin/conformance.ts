#!/usr/bin/env node
/**
 * The conformance handler: the task types, events, environment and shutdown behaviour that
 * interop/README.md ("The conformance handler contract") defines, built on this package's public API only.
 */
import { randomBytes } from "node:crypto";
import { writeSync } from "node:fs";
import {
  Bytes,
  Cancelled,
  Retry,
  SDK_VERSION,
  Terminate,
  bytes,
  connectNats,
  createService,
  serve,
  type Handler,
  type Middleware,
  type Task,
} from "../src/index.js";

const EVENTS_SUBJECT = "jetbridge.conformance.events";

const natsUrl = process.env.NATS_URL || "nats://127.0.0.1:4222";
const instance = process.env.JETBRIDGE_INSTANCE || `node-${randomBytes(4).toString("hex")}`;
const concurrency = Number.parseInt(process.env.JETBRIDGE_CONCURRENCY || "64", 10);
const subjectPrefix = process.env.JETBRIDGE_SUBJECT_PREFIX || "jetbridge.task";

// Reconnects forever: the suite restarts the server and fails a cluster over under a running handler.
const nc = await connectNats({ servers: natsUrl, name: `jetbridge-conformance ${instance}` });

function event(name: string, task: Task, extra: Record<string, unknown> = {}): void {
  const body = { event: name, task_id: task.id, attempt: task.attempt, instance, ...extra };
  try {
    nc.publish(EVENTS_SUBJECT, JSON.stringify(body));
  } catch (err) {
    console.error(`jetbridge-conformance: event ${name} not published`, err);
  }
}

/** The payload as an object, or a terminate: conformance payloads are always JSON objects. */
function params(task: Task): Record<string, unknown> {
  const p = task.payload;
  if (p === null || typeof p !== "object" || Array.isArray(p) || p instanceof Bytes) return {};
  return p as Record<string, unknown>;
}

/** An integer payload member (any sign), or its default when absent. */
function integer(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value)) throw new Terminate("bad_payload", `${name} must be an integer`);
  return value;
}

function count(value: unknown, name: string, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw new Terminate("bad_payload", `${name} must be a non-negative integer`);
  }
  return value;
}

/** Waits `ms`, or rejects with the signal's reason when it aborts first. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Publishes `started` for every attempt it starts running, and, for task types that observe cancellation
 * (`reportsCancel`), `cancelled` when the attempt is cancelled: by a cancel message, its budget (`timeout`) or
 * fencing (`lost`), but not a drain (SPEC §12.2). conf:sleep with ignore_cancel opts out.
 */
function withEvents(handler: Handler, reportsCancel: (task: Task) => boolean = () => false): Handler {
  return (task) => {
    event("started", task);
    task.signal.addEventListener(
      "abort",
      () => {
        const reason = task.signal.reason;
        if (reason instanceof Cancelled && reason.reason !== "drain" && reportsCancel(task)) {
          event("cancelled", task, { reason: reason.reason });
        }
      },
      { once: true },
    );
    return handler(task);
  };
}

const handlers: Record<string, Handler> = {
  "conf:echo": (task) => task.payload,

  "conf:info": (task) => ({
    instance,
    lang: "node",
    task_id: task.id,
    attempt: task.attempt,
    max_attempts: task.maxAttempts,
    queue: task.queue,
    budget_ms: task.budgetMs,
  }),

  "conf:fail": (task) => {
    const times = count(params(task).times, "times");
    if (task.attempt <= times) throw new Retry("planned_failure", `failure ${task.attempt} of ${times}`);
    return { attempt: task.attempt };
  },

  "conf:retry_after": (task) => {
    const ms = count(params(task).ms, "ms");
    if (task.attempt === 1) throw new Retry("planned_failure", "retry later", { retryAfterMs: ms });
    return { attempt: task.attempt };
  },

  "conf:terminate": (task) => {
    const message = params(task).message;
    throw new Terminate("planned_terminate", typeof message === "string" ? message : "terminated");
  },

  "conf:sleep": async (task) => {
    const p = params(task);
    const ms = count(p.ms, "ms", 0);
    const steps = Math.max(1, integer(p.steps, "steps", 1));
    if (p.only_attempt !== undefined && p.only_attempt !== task.attempt) return { slept_ms: 0, attempt: task.attempt };
    const signal = p.ignore_cancel === true ? undefined : task.signal;
    for (let i = 1; i <= steps; i++) {
      // Step ends are computed from the total so that rounding never adds up past `ms`.
      await sleep(Math.round((ms * i) / steps) - Math.round((ms * (i - 1)) / steps), signal);
      task.heartbeat({ progress: i / steps, message: `step ${i} of ${steps}` });
    }
    return { slept_ms: ms, attempt: task.attempt };
  },

  "conf:big": (task) => bytes(new Uint8Array(count(params(task).bytes, "bytes")).fill(0x61), "application/octet-stream"),

  "conf:panic": () => {
    throw new Error("conf:panic: planned crash in handler code");
  },

  // conf:mw_blocked shares it, but middleware keeps it from running (SPEC §12.2)
  "conf:mw": () => ({ trail: ["handler"] }),
  "conf:mw_blocked": () => ({ trail: ["handler"] }),
};

/** Appends `name` to a `trail` result on the way out (SPEC §12.2). */
function tagger(name: string): Middleware {
  return async (_task, next) => {
    const result = await next();
    const trail = (result as { trail?: unknown } | null)?.trail;
    if (Array.isArray(trail)) trail.push(name);
    return result;
  };
}

const service = createService({
  name: "jetbridge-conformance",
  version: "1.0.0",
  description: `Jetbridge conformance handler, node/${SDK_VERSION}`,
  subjectPrefix,
  concurrency,
});
// The conformance middleware, in the order SPEC §12.2 gives: outer, group (conf:mw*), inner, block (conf:mw_blocked).
service
  .use(tagger("outer"))
  .use("conf:mw*", tagger("group"))
  .use(tagger("inner"))
  .use("conf:mw_blocked", () => {
    throw new Terminate("mw_blocked", "blocked by middleware");
  });
for (const [type, handler] of Object.entries(handlers)) {
  const reportsCancel = type === "conf:sleep" ? (task: Task) => params(task).ignore_cancel !== true : undefined;
  service.handle(type, withEvents(handler, reportsCancel));
}

const serving = await serve(service, { connection: nc });
// Synchronous write: the suite reads this line to know the endpoints are subscribed (serve() flushed them).
writeSync(1, "ready\n");

serving.done.then(
  () => process.exit(0),
  (err) => {
    console.error("jetbridge-conformance: connection lost", err);
    process.exit(1);
  },
);
