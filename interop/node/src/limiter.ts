/**
 * A counting semaphore that caps how many handlers run at once. Requests beyond the cap wait in arrival
 * order rather than being refused, because NATS core has no way to hand a request back to the queue group.
 */
export class Limiter {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError("concurrency must be an integer of at least 1");
  }

  /**
   * Resolves once a slot is free. Rejects with the signal's reason if the signal aborts first, so that an
   * attempt cancelled while it waited never starts.
   */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.running < this.limit) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener("abort", onAbort);
        this.running++;
        resolve();
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(grant);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(grant);
    });
  }

  release(): void {
    this.running--;
    this.waiting.shift()?.();
  }

  /** Handlers running now. */
  get active(): number {
    return this.running;
  }
}
