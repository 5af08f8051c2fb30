/**
 * Sends one attempt's heartbeats under the protocol 1.1 rules (SPEC §5): the first `min(250 ms,
 * heartbeat_interval_ms)` after receipt (also while the request waits for a free worker; an attempt that replies
 * sooner sends none), then every `heartbeat_interval_ms` until the attempt ends.
 *
 * When the request carries `heartbeat_ack: true`, heartbeats are requests and the attempt fences itself: it
 * is declared lost as soon as a heartbeat gets "no responders" (the dispatcher no longer listens for this
 * attempt) or no heartbeat sent in the last `3 × heartbeat_interval_ms` was acknowledged. Without it (a 1.0
 * dispatcher) heartbeats are plain publishes and nothing is fenced.
 */
import { heartbeatBody } from "./heartbeat.js";
import type { TaskRequest } from "./request.js";
import type { HeartbeatUpdate, Logger } from "./types.js";
import type { RequestOutcome, Wire } from "./wire.js";

/** setTimeout's ceiling; longer intervals are simply never reached by the timer. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The first heartbeat is due this long after receipt at most (SPEC §5.1). */
export const FIRST_HEARTBEAT_DELAY_MS = 250;

/** Heartbeat timeout in heartbeat intervals (SPEC §5: the lease is 3 × heartbeat_interval_ms). */
const TIMEOUT_INTERVALS = 3;

export interface HeartbeaterOptions {
  wire: Wire;
  request: TaskRequest;
  logger: Logger;
  /** Called once when the attempt is fenced, with why. */
  onLost: (message: string) => void;
}

export class Heartbeater {
  private readonly interval: number;
  private readonly acked: boolean;
  private ticker: NodeJS.Timeout | undefined;
  private first: NodeJS.Timeout | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  /** performance.now() at which the newest acknowledged heartbeat was sent; starts at receipt. */
  private ackedAt = performance.now();
  /** Date.now() at receipt: a late request is judged by the wall clock the dispatcher stamps it with. */
  private readonly receivedWall = Date.now();
  private outstanding = false;
  /** An explicit heartbeat that waits for the outstanding request to end. */
  private queued: Uint8Array | undefined;
  private stopped = false;

  constructor(private readonly options: HeartbeaterOptions) {
    this.interval = options.request.heartbeat_interval_ms;
    this.acked = options.request.heartbeat_ack === true && this.interval > 0;
  }

  /** Starts the clock at receipt. With an interval of 0 heartbeats are optional: none. */
  start(): void {
    if (this.interval <= 0) return;
    this.first = setTimeout(() => {
      this.first = undefined;
      this.beat();
      this.ticker = setInterval(() => this.beat(), Math.min(this.interval, MAX_TIMER_MS));
    }, Math.min(FIRST_HEARTBEAT_DELAY_MS, this.interval));
    if (this.acked) this.armFence();
  }

  /**
   * Sends a heartbeat now. Automatic ones carry no progress (which never clears stored progress). With acks, at
   * most one request is outstanding (SPEC §5.2): a periodic heartbeat due meanwhile is skipped, and an explicit
   * one waits and goes out as the next request as soon as the outstanding one has ended.
   */
  beat(update?: HeartbeatUpdate): void {
    if (this.stopped) return;
    const { request } = this.options;
    // Built first, so that an invalid progress throws at the handler's call.
    const data = new TextEncoder().encode(JSON.stringify(heartbeatBody(request.task_id, request.attempt_token, update)));
    if (!this.acked) {
      this.publish(data);
      return;
    }
    if (this.outstanding) {
      if (update !== undefined) this.queued = data;
      return;
    }
    void this.send(data);
  }

  /**
   * SPEC §5.2, late requests: with acks, a request received more than the heartbeat timeout after it was sent
   * (`attempt_deadline − budget_ms`) may already have been given up, its next attempt running elsewhere (a
   * process paused with it in its socket). Resolves once a heartbeat sent at once is acknowledged; otherwise the
   * attempt is fenced (no responders, no ack within one interval), so its handler must not start. A request that
   * is not late, or has no acks, resolves at once and sends nothing. Also resolves once `signal` aborts (a cancel,
   * the budget): the attempt will not start then either.
   */
  async confirmLate(signal: AbortSignal): Promise<void> {
    const { request } = this.options;
    if (!this.acked || !isLate(this.receivedWall, request.attempt_deadline, request.budget_ms, this.interval)) return;
    const data = new TextEncoder().encode(JSON.stringify(heartbeatBody(request.task_id, request.attempt_token)));
    const abort = new Promise<"aborted">((resolve) => {
      if (signal.aborted) resolve("aborted");
      else signal.addEventListener("abort", () => resolve("aborted"), { once: true });
    });
    const outcome = await Promise.race([this.send(data), abort]);
    if (outcome !== "ack" && outcome !== "aborted") {
      this.fence(`late request: its heartbeat was not acknowledged (${outcome})`);
    }
  }

  private publish(data: Uint8Array): void {
    const { request, wire, logger } = this.options;
    try {
      wire.publish(request.heartbeat_subject, data);
    } catch (err) {
      logger.warn(`jetbridge: heartbeat for task ${request.task_id} not sent`, err);
    }
  }

  /** Sends one heartbeat as a request, applies the 1.1 fencing rules to how it ends, and reports that. */
  private send(data: Uint8Array): Promise<RequestOutcome> {
    const { request, wire } = this.options;
    this.outstanding = true;
    const sentAt = performance.now();
    return wire.request(request.heartbeat_subject, data, this.interval).then((outcome) => {
      this.outstanding = false;
      if (this.stopped) return outcome;
      if (outcome === "ack") {
        if (sentAt > this.ackedAt) this.ackedAt = sentAt;
        this.armFence();
      } else if (outcome === "no_responders") {
        // Right after a reconnect the dispatcher may not have re-subscribed yet: count it as a missing ack,
        // which the heartbeat timeout still bounds (so the fence is never later than the dispatcher's timeout).
        if (wire.reconnectedAt <= this.ackedAt) {
          this.fence("heartbeat got no responders: the dispatcher no longer tracks this attempt");
          return outcome;
        }
      }
      const next = this.queued;
      this.queued = undefined;
      if (next) void this.send(next);
      return outcome;
    });
  }

  /** Stops every timer; later heartbeats are dropped (the dispatcher would call them stale). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.first);
    clearInterval(this.ticker);
    clearTimeout(this.fenceTimer);
  }

  private armFence(): void {
    clearTimeout(this.fenceTimer);
    const due = this.ackedAt + TIMEOUT_INTERVALS * this.interval - performance.now();
    this.fenceTimer = setTimeout(
      () => this.fence(`no heartbeat acknowledged for ${TIMEOUT_INTERVALS * this.interval} ms`),
      Math.min(Math.max(0, due), MAX_TIMER_MS),
    );
  }

  private fence(message: string): void {
    if (this.stopped) return;
    this.stop();
    this.options.logger.warn(`jetbridge: task ${this.options.request.task_id} attempt lost: ${message}`);
    this.options.onLost(message);
  }
}

/**
 * Whether a request received at `receivedMs` (wall clock) came more than the heartbeat timeout after it was
 * sent, at `attempt_deadline − budget_ms` (SPEC §5.2). Clock skew only moves the threshold.
 */
export function isLate(receivedMs: number, attemptDeadline: string, budgetMs: number, intervalMs: number): boolean {
  if (intervalMs <= 0) return false;
  return receivedMs - (Date.parse(attemptDeadline) - budgetMs) > TIMEOUT_INTERVALS * intervalMs;
}
