/**
 * The public types of the jetbridge package. Field meanings are those of protocol/SPEC.md §3.2; this file
 * only says how they look from JavaScript.
 */
import type { Bytes } from "./bytes.js";
import type { CANCEL_REASONS } from "./constants.js";

/** Any value JSON can carry. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A reason in a dispatcher's cancel message (SPEC §7). */
export type CancelReason = (typeof CANCEL_REASONS)[number];

/**
 * Why a task's signal was aborted: a dispatcher cancel (its reason), the request's `budget_ms` running out
 * (`"timeout"`, SPEC protocol 1.1), the library fencing a lost attempt (`"lost"`), or the service draining past
 * its grace period (`"drain"`).
 */
export type AbortCause = CancelReason | "drain";

/** What a handler may report with an explicit heartbeat (SPEC §5). */
export interface HeartbeatUpdate {
  /** Fraction done, 0 to 1. */
  progress?: number;
  /** A short human-readable status; cut to 1024 characters. */
  message?: string;
}

/** One attempt of a task, as a handler sees it. */
export interface Task {
  /** Task id: stable across attempts, so use it as an idempotency key. */
  readonly id: string;
  readonly type: string;
  readonly queue: string;
  /** This attempt's number, from 1. */
  readonly attempt: number;
  /** The most attempts the task gets; 0 means no limit. */
  readonly maxAttempts: number;
  readonly created: Date;
  /** The task's overall deadline, or null. */
  readonly deadline: Date | null;
  /** When the dispatcher stops waiting for this attempt. */
  readonly attemptDeadline: Date;
  /** Milliseconds this attempt may run, as sent; prefer it (or `signal`) to comparing clocks. */
  readonly budgetMs: number;
  /** The payload: the JSON value as sent, or a {@link Bytes} for binary payloads. */
  readonly payload: JsonValue | Bytes;
  /** The payload's content type (`application/json` for JSON payloads). */
  readonly contentType: string;
  /** W3C trace context, when the dispatcher sent one. */
  readonly traceparent: string | undefined;
  /** The request's NATS headers (SPEC §3.1: `Jetbridge-Task-Id`, `traceparent`...), first value of each. */
  readonly headers: Readonly<Record<string, string>>;
  /**
   * Aborted when the dispatcher cancels this attempt, when `budgetMs` runs out, or when the service drains
   * past its grace period; `signal.reason` is then a {@link Cancelled} error saying which.
   */
  readonly signal: AbortSignal;
  /** Publishes a heartbeat now, with optional progress; automatic heartbeats need no call. */
  heartbeat(update?: HeartbeatUpdate): void;
}

/**
 * A task handler. Its return value is the result: a `Uint8Array` or {@link Bytes} is sent as binary, anything
 * else (including `undefined`, sent as null) as JSON. Throw {@link Retry} or {@link Terminate} to fail the
 * attempt deliberately; any other error becomes a retry with code `handler_error`.
 */
export type Handler = (task: Task) => unknown | Promise<unknown>;

/** Where the SDK reports problems it cannot send back to the dispatcher. */
export interface Logger {
  warn(message: string, ...rest: unknown[]): void;
  error(message: string, ...rest: unknown[]): void;
}

/** Options of {@link createService}. */
export interface ServiceOptions {
  /** Micro service name (letters, digits, `-`, `_`). */
  name: string;
  /** Micro service version, semver. */
  version: string;
  description?: string;
  /** Extra service metadata; the `jetbridge.*` keys are set by the SDK. */
  metadata?: Record<string, string>;
  /** Task subjects are `<subjectPrefix>.<task_type>`; default `jetbridge.task`. */
  subjectPrefix?: string;
  /** Queue group shared by replicas; default `jetbridge`. */
  queue?: string;
  /** Attempts run at once; further requests wait for a slot (heartbeats keep them alive). Default 64. */
  concurrency?: number;
  /** How long {@link JetbridgeService.drain} lets running attempts finish before aborting them; default 25 s. */
  drainGraceMs?: number;
  /** Default `console`. */
  logger?: Logger;
}

/** Options of one endpoint in {@link JetbridgeService.handle}. */
export interface HandleOptions {
  /** Extra endpoint metadata; `jetbridge.task_type` is set by the SDK. */
  metadata?: Record<string, string>;
}

// Re-exported here so that `types.ts` alone documents the public surface.
export type { Bytes } from "./bytes.js";
export type { Cancelled, Retry, Terminate } from "./errors.js";
export type { JetbridgeService } from "./service.js";
