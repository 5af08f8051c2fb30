/**
 * Keeps each endpoint's `nats micro stats` true: one request per attempt, its processing time the handler's real
 * wall time (receipt to reply), and every retry, terminate and rejection reply counted as an error.
 *
 * Why by hand: @nats-io/services 3.0.0-25 times only the synchronous part of a handler (near zero for an async
 * one) and counts only errors thrown synchronously. This keeps the totals here and writes them into the
 * endpoint's internal stats record of that exact (pinned) version, with the library's own counting switched off;
 * if the shape ever differs it does nothing, so an upgrade can lose the numbers but never break a reply. The
 * totals live here, not in the record, so they survive a re-created micro service (see service.ts).
 */
import type { Service } from "@nats-io/services";

interface StatsRecord {
  num_requests: number;
  num_errors: number;
  processing_time: number;
  average_processing_time: number;
  last_error?: string;
  countLatency?: unknown;
  countError?: unknown;
}

interface InternalEndpoint {
  subject?: unknown;
  stats?: StatsRecord;
}

/** Totals of one endpoint, kept across micro service re-creations. */
export class EndpointStats {
  requests = 0;
  errors = 0;
  /** Nanoseconds, as micro reports them. */
  processingNs = 0;
  lastError: string | undefined;
  private record: StatsRecord | undefined;

  /** Attaches to the endpoint listening on `subject` of `service`, and shows the totals there. */
  attach(service: Service, subject: string): void {
    const handlers = (service as unknown as { handlers?: InternalEndpoint[] }).handlers;
    const endpoint = Array.isArray(handlers) ? handlers.find((h) => h.subject === subject) : undefined;
    const record = endpoint?.stats;
    if (!record || typeof record.countLatency !== "function" || typeof record.countError !== "function") {
      this.record = undefined;
      return;
    }
    // The library's own counting would add a near-zero time and a second request per message.
    record.countLatency = () => {};
    record.countError = () => {};
    this.record = record;
    this.show();
  }

  /** Records one answered request: its wall time in nanoseconds and, for an error reply, its message. */
  count(elapsedNs: number, error?: string): void {
    this.requests++;
    this.processingNs += Math.max(0, Math.round(elapsedNs));
    if (error !== undefined) {
      this.errors++;
      this.lastError = error;
    }
    this.show();
  }

  private show(): void {
    const r = this.record;
    if (!r) return;
    r.num_requests = this.requests;
    r.num_errors = this.errors;
    r.processing_time = this.processingNs;
    r.average_processing_time = this.requests > 0 ? Math.round(this.processingNs / this.requests) : 0;
    r.last_error = this.lastError;
  }
}
