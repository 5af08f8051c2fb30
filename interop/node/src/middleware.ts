/**
 * Middleware around task handlers (issue 20), Express style: `service.use(async (task, next) => ...)` for every
 * task type, `service.use("email:*", ...)` for a group. A middleware sees the task, may call `next()` (optionally
 * with a changed task) and change what it returns, or short-circuit by returning a result or throwing Retry or
 * Terminate without calling it. Global middleware (`use(mw)`) run outside every group (`use(pattern, mw)`),
 * whatever the order of the calls, as in the Go, Rust and Python libraries; within each kind, in the order of the
 * calls. The built-in {@link recover} is always outermost, so every other middleware sees a handler's errors as
 * thrown.
 */
import { Cancelled, Retry, Terminate } from "./errors.js";
import type { Handler, Logger, Task } from "./types.js";

/** Runs the rest of the chain (later middleware, then the handler); pass a task to change what they see. */
export type Next = (task?: Task) => Promise<unknown>;

/** One link of the chain. Its return value (or throw) is what the middleware before it gets from `next()`. */
export type Middleware = (task: Task, next: Next) => unknown;

/** `*` (every type), an exact type, or a prefix ending in `*` (`email:*`). */
const PATTERN = /^(\*|[a-zA-Z0-9_:-]+\*?)$/u;

/** A middleware with the types it applies to. */
export interface Use {
  pattern: string;
  middleware: Middleware;
  /** Added by `use(mw)`: runs outside every group. */
  global?: boolean;
}

/** Throws a TypeError unless `pattern` is `*`, a task type, or a task type prefix ending in `*`. */
export function checkPattern(pattern: string): void {
  if (!PATTERN.test(pattern)) {
    throw new TypeError(`middleware pattern ${JSON.stringify(pattern)} must be "*", a task type, or a prefix ending in "*"`);
  }
}

/** True when `pattern` selects `type`. */
export function matches(pattern: string, type: string): boolean {
  return pattern.endsWith("*") ? type.startsWith(pattern.slice(0, -1)) : pattern === type;
}

/**
 * The handler wrapped in the middleware that apply to `type`: the global ones, then the groups whose pattern
 * selects it, each in order; the first runs outermost.
 */
export function compose(uses: readonly Use[], type: string, handler: Handler): Handler {
  const groups = uses.filter((u) => !u.global && matches(u.pattern, type));
  const chain = [...uses.filter((u) => u.global), ...groups].map((u) => u.middleware);
  const at =
    (i: number) =>
    async (task: Task): Promise<unknown> => {
      if (i === chain.length) return handler(task);
      let called = false;
      return chain[i]!(task, (next = task) => {
        if (called) return Promise.reject(new Error("next() called twice by one middleware"));
        called = true;
        return at(i + 1)(next);
      });
    };
  return at(0);
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  try {
    return String(err);
  } catch {
    return "handler threw a value that cannot be shown";
  }
}

/**
 * Error recovery (built in, always outermost): Retry and Terminate pass through; anything else thrown after the
 * task's signal aborted becomes a retry with code `cancelled`, and any other error a retry with code
 * `handler_error` (logged with its stack), so a crashing handler never takes the service down.
 */
export function recover(logger: Logger = console): Middleware {
  return async (task, next) => {
    try {
      return await next();
    } catch (err) {
      if (err instanceof Retry || err instanceof Terminate) throw err;
      if (task.signal.aborted) {
        const reason = task.signal.reason;
        throw new Retry("cancelled", reason instanceof Cancelled ? reason.message : "attempt cancelled");
      }
      logger.error(`jetbridge: handler for task ${task.id} (${task.type}, attempt ${task.attempt}) failed`, err);
      throw new Retry("handler_error", describe(err));
    }
  };
}

/** One line per attempt from {@link logging}. */
export interface AttemptLog {
  event: "task_done";
  task_id: string;
  task_type: string;
  queue: string;
  attempt: number;
  duration_ms: number;
  outcome: "ok" | "retry" | "terminate";
  error_code?: string;
}

/** Logs every attempt's outcome and duration as one structured record (default: a JSON line on stdout). */
export function logging(write: (record: AttemptLog) => void = (r) => console.log(JSON.stringify(r))): Middleware {
  return async (task, next) => {
    const started = performance.now();
    const record = (outcome: AttemptLog["outcome"], errorCode?: string): AttemptLog => ({
      event: "task_done",
      task_id: task.id,
      task_type: task.type,
      queue: task.queue,
      attempt: task.attempt,
      duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
      outcome,
      ...(errorCode === undefined ? {} : { error_code: errorCode }),
    });
    try {
      const result = await next();
      write(record("ok"));
      return result;
    } catch (err) {
      const outcome = err instanceof Terminate ? "terminate" : "retry";
      const code = err instanceof Retry || err instanceof Terminate ? err.code : "handler_error";
      write(record(outcome, code));
      throw err;
    }
  };
}

/**
 * A timeout for the rest of the chain: `ms` (default: the attempt's `budgetMs`). When it passes, the signal the
 * handler sees aborts (reason `timeout`) and the attempt replies at once with a retry, code `timeout`, instead of
 * waiting for a handler that ignores its signal; that handler's late outcome is then dropped (its slot is freed,
 * although its code may still run). Without this middleware the library aborts the signal at the budget and
 * sends whatever the handler returns, however late.
 */
export function timeout(ms?: number): Middleware {
  if (ms !== undefined && !(Number.isFinite(ms) && ms >= 0)) throw new RangeError("timeout must be a non-negative number of ms");
  return async (task, next) => {
    const limit = ms ?? task.budgetMs;
    const controller = new AbortController();
    const signal = AbortSignal.any([task.signal, controller.signal]);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const reason = new Cancelled("timeout", `handler took longer than ${limit} ms`);
        controller.abort(reason);
        reject(new Retry("timeout", reason.message));
      }, Math.min(limit, 2 ** 31 - 1));
    });
    const inner: Task = Object.create(task, { signal: { value: signal, enumerable: true } });
    try {
      return await Promise.race([next(inner), expired]);
    } finally {
      clearTimeout(timer);
    }
  };
}
