/**
 * The errors a handler throws to choose its reply (SPEC §4), and the abort reason of a task's signal.
 */
import { MAX_RETRY_AFTER_MS } from "./constants.js";
import type { AbortCause } from "./types.js";

/** Options shared by {@link Retry} and {@link Terminate}. */
export interface FailureOptions {
  /** Any JSON value, sent as `error.details`. */
  details?: unknown;
}

/** Options of {@link Retry}. */
export interface RetryOptions extends FailureOptions {
  /**
   * Replaces the queue's backoff for this retry, in milliseconds (non-negative). Rounded up to an integer and
   * clamped to the spec's maximum of 604 800 000 (7 days).
   */
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
    if (after !== undefined && !(typeof after === "number" && after >= 0)) {
      throw new RangeError("retryAfterMs must be a non-negative number");
    }
    // The schema wants an integer; round up so the handler never gets called back earlier than it asked.
    this.retryAfterMs = after === undefined ? undefined : Math.min(Math.ceil(after), MAX_RETRY_AFTER_MS);
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
  /**
   * What aborted the attempt: a cancel message's reason; `timeout` when `budget_ms` ran out; `lost` when the
   * library fenced the attempt (its heartbeats were not acknowledged); `drain` when a drain's grace period ended.
   */
  readonly reason: AbortCause;
  /** True when a cancel message from the dispatcher aborted the attempt (not the budget, fencing or a drain). */
  readonly byDispatcher: boolean;

  constructor(reason: AbortCause, message?: string, options: { byDispatcher?: boolean } = {}) {
    super(message ?? `attempt cancelled: ${reason}`);
    this.reason = reason;
    this.byDispatcher = options.byDispatcher ?? false;
  }
}
