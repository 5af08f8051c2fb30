/**
 * Runs one attempt: builds the {@link Task} a handler sees, wires its AbortSignal to the cancel subject, the
 * budget (a cancel with reason `timeout`) and self-fencing (reason `lost`), heartbeats from receipt until the
 * reply, and turns the outcome into a reply (SPEC §3.3 step 4, §5, §7). A reply is always sent, late or not.
 */
import type { Bytes } from "./bytes.js";
import { parseCancel } from "./cancel.js";
import { Cancelled } from "./errors.js";
import { Heartbeater, MAX_TIMER_MS } from "./heartbeater.js";
import type { Limiter } from "./limiter.js";
import { replyForError, replyForResult, type Reply } from "./reply.js";
import type { TaskRequest } from "./request.js";
import type { Handler, HeartbeatUpdate, JsonValue, Logger, Task } from "./types.js";
import type { Subscription, Wire } from "./wire.js";

export interface AttemptOptions {
  wire: Wire;
  request: TaskRequest;
  payload: JsonValue | Bytes;
  handler: Handler;
  logger: Logger;
  /** When given, the handler waits for a slot; the attempt's heartbeats and cancel run meanwhile. */
  limiter?: Limiter;
  /** The request's NATS headers (SPEC §3.1), for middleware; default none. */
  headers?: Readonly<Record<string, string>>;
}

export class Attempt {
  readonly task: Task;
  private readonly controller = new AbortController();
  private readonly heartbeater: Heartbeater;
  private finished = false;

  constructor(private readonly options: AttemptOptions) {
    const r = options.request;
    const self = this;
    this.heartbeater = new Heartbeater({
      wire: options.wire,
      request: r,
      logger: options.logger,
      onLost: (message) => this.abort(new Cancelled("lost", `attempt lost: ${message}`)),
    });
    this.task = {
      id: r.task_id,
      type: r.task_type,
      queue: r.queue,
      attempt: r.attempt,
      maxAttempts: r.max_attempts,
      created: new Date(r.created),
      deadline: r.deadline === null ? null : new Date(r.deadline),
      attemptDeadline: new Date(r.attempt_deadline),
      budgetMs: r.budget_ms,
      payload: options.payload,
      contentType: r.content_type,
      traceparent: r.traceparent,
      headers: Object.freeze({ ...options.headers }),
      signal: this.controller.signal,
      heartbeat(update?: HeartbeatUpdate) {
        self.heartbeat(update);
      },
    };
  }

  get token(): string {
    return this.options.request.attempt_token;
  }

  /** Aborts the task's signal, once; later causes are ignored so `signal.reason` names the first. */
  abort(reason: Cancelled): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  /**
   * Sends a heartbeat; a no-op once the attempt has replied (the dispatcher would call it stale) or was fenced.
   * An invalid progress throws a RangeError, before anything is sent.
   */
  heartbeat(update?: HeartbeatUpdate): void {
    if (this.finished) return;
    this.heartbeater.beat(update);
  }

  /**
   * Runs the handler to completion and returns the reply to send; never throws. Call it on receipt: the
   * heartbeat clock, the budget and the cancel subscription start at once, before the wait for a free slot.
   */
  async run(): Promise<Reply> {
    const { handler, limiter } = this.options;
    const stop = this.start();
    try {
      // A late request starts only once the dispatcher acknowledged a heartbeat; fenced, it is answered unrun.
      await this.heartbeater.confirmLate(this.controller.signal);
      if (this.controller.signal.aborted) throw this.controller.signal.reason;
      await limiter?.acquire(this.controller.signal);
    } catch (err) {
      stop();
      return replyForError(this.token, err, this.controller.signal);
    }
    try {
      return replyForResult(this.token, await handler(this.task));
    } catch (err) {
      return replyForError(this.token, err, this.controller.signal);
    } finally {
      limiter?.release();
      stop();
    }
  }

  /** Starts the cancel subscription, the heartbeats and the budget timer; returns the function that stops them. */
  private start(): () => void {
    const { request, logger } = this.options;
    const subscription = this.subscribeCancel();
    this.heartbeater.start();
    // Protocol 1.1: budget exhaustion is a cancel with reason `timeout`; the reply is still sent.
    const budget = setTimeout(
      () => this.abort(new Cancelled("timeout", `attempt budget of ${request.budget_ms} ms used up`)),
      Math.min(request.budget_ms, MAX_TIMER_MS),
    );
    return () => {
      if (this.finished) return;
      this.finished = true;
      clearTimeout(budget);
      this.heartbeater.stop();
      try {
        subscription?.unsubscribe();
      } catch (err) {
        logger.warn(`jetbridge: cancel subscription for task ${request.task_id} not closed`, err);
      }
    };
  }

  /** SPEC §7: a cancel for this attempt's token aborts it; invalid or foreign cancels are ignored. */
  private subscribeCancel(): Subscription | undefined {
    const { request, wire, logger } = this.options;
    try {
      return wire.subscribe(request.cancel_subject, (data) => {
        const cancel = parseCancel(data);
        if (!cancel.valid) {
          logger.warn(`jetbridge: ignoring invalid cancel for task ${request.task_id}: ${cancel.problem}`);
          return;
        }
        if (cancel.token !== request.attempt_token) return;
        this.abort(new Cancelled(cancel.reason, cancel.message, { byDispatcher: true }));
      });
    } catch (err) {
      // Cancels are best effort (SPEC §7): the attempt still runs, bounded by its budget.
      logger.warn(`jetbridge: cannot subscribe to ${request.cancel_subject}`, err);
      return undefined;
    }
  }
}
