/**
 * The errors a handler throws to choose its reply (SPEC §4), and the abort reason of a task's signal.
 */
import type { AbortCause } from "./types.js";

/** Options shared by {@link Retry} and {@link Terminate}. */
export interface FailureOptions {
  /** Any JSON value, sent as `error.details`. */
  details?: unknown;
}

/** Options of {@link Retry}. */
export interface RetryOptions extends FailureOptions {
  /** Replaces the queue's backoff for this retry; a non-negative integer number of milliseconds. */
  retryAfterMs?: number;
}

/** Throw to fail this attempt and let the dispatcher try the task again. */
export class Retry extends Error {
  override readonly name = "Retry";
  readonly code: string;
  readonly retryAfterMs: number | undefined;
  readonly details: unknown;

  constructor(code: string, message: string, options: RetryOptions = {}) {
    super(message);
    this.code = code;
    const after = options.retryAfterMs;
    if (after !== undefined && !(Number.isFinite(after) && after >= 0)) {
      throw new RangeError("retryAfterMs must be a non-negative number");
    }
    // The schema wants an integer; round up so the handler never gets called back earlier than it asked.
    this.retryAfterMs = after === undefined ? undefined : Math.ceil(after);
    this.details = options.details;
  }
}

/** Throw to fail the task for good: it is never retried. */
export class Terminate extends Error {
  override readonly name = "Terminate";
  readonly code: string;
  readonly details: unknown;

  constructor(code: string, message: string, options: FailureOptions = {}) {
    super(message);
    this.code = code;
    this.details = options.details;
  }
}

/** The `reason` of an aborted task signal. */
export class Cancelled extends Error {
  override readonly name = "Cancelled";
  /** What aborted the attempt: a cancel message's reason, `budget` or `drain`. */
  readonly reason: AbortCause;

  constructor(reason: AbortCause, message?: string) {
    super(message ?? `attempt cancelled: ${reason}`);
    this.reason = reason;
  }

  /** True when a cancel message from the dispatcher aborted the attempt (rather than the budget or a drain). */
  get byDispatcher(): boolean {
    return this.reason !== "budget" && this.reason !== "drain";
  }
}
