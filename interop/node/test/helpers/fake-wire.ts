/** An in-memory {@link Wire}: publishes reach local subscribers synchronously, and tests can await a subject. */
import type { RequestOutcome, Subscription, Wire } from "../../src/wire.js";

export interface Published {
  subject: string;
  data: Uint8Array;
  headers: Record<string, string> | undefined;
}

export class FakeWire implements Wire {
  maxPayload = 1024 * 1024;
  reconnectedAt = -Infinity;
  /** How requests end (heartbeats of 1.1 attempts); the default acknowledges every one at once. */
  answer: (subject: string, data: Uint8Array) => RequestOutcome | Promise<RequestOutcome> = () => "ack";
  /** Requests sent so far (they are in `published` too). */
  readonly requests: Published[] = [];
  readonly published: Published[] = [];
  private readonly subs = new Map<string, Set<(data: Uint8Array) => void>>();
  private readonly waiters: Array<{ subject: string; resolve: (p: Published) => void }> = [];

  publish(subject: string, data: Uint8Array, headers?: Record<string, string>): void {
    const p = { subject, data, headers };
    this.published.push(p);
    for (const cb of this.subs.get(subject) ?? []) cb(data);
    for (const w of this.waiters.filter((w) => w.subject === subject)) {
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve(p);
    }
  }

  async request(subject: string, data: Uint8Array, _timeoutMs: number): Promise<RequestOutcome> {
    this.requests.push({ subject, data, headers: undefined });
    this.publish(subject, data);
    return this.answer(subject, data);
  }

  subscribe(subject: string, onMessage: (data: Uint8Array) => void): Subscription {
    let set = this.subs.get(subject);
    if (!set) this.subs.set(subject, (set = new Set()));
    set.add(onMessage);
    return { unsubscribe: () => set!.delete(onMessage) };
  }

  /** Subscribers on `subject` now. */
  listeners(subject: string): number {
    return this.subs.get(subject)?.size ?? 0;
  }

  /** Resolves with the next message published on `subject`. */
  next(subject: string): Promise<Published> {
    return new Promise((resolve) => this.waiters.push({ subject, resolve }));
  }

  /** JSON bodies published on `subject` so far. */
  json(subject: string): unknown[] {
    return this.published.filter((p) => p.subject === subject).map((p) => JSON.parse(new TextDecoder().decode(p.data)));
  }
}
