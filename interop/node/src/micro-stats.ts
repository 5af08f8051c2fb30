/**
 * Counts error replies in the micro service's endpoint stats.
 *
 * Why: SPEC §4 wants error replies to show in `nats micro stats`. nats.go counts them when a handler replies
 * with an error; @nats-io/services 3.0.0-25 only counts handlers that throw synchronously, which an async
 * handler never does. This reaches the endpoint's internal stats record of that exact (pinned) version; if
 * the shape ever differs it does nothing, so an upgrade can lose the count but never break a reply.
 */
import type { Service } from "@nats-io/services";

export type ErrorCounter = (message: string) => void;

interface InternalEndpoint {
  subject?: unknown;
  stats?: { countError?: (err: Error) => void };
}

/** A function that records one error on the endpoint listening on `subject`. */
export function errorCounter(service: Service, subject: string): ErrorCounter {
  const handlers = (service as unknown as { handlers?: InternalEndpoint[] }).handlers;
  const endpoint = Array.isArray(handlers) ? handlers.find((h) => h.subject === subject) : undefined;
  const stats = endpoint?.stats;
  if (typeof stats?.countError !== "function") return () => {};
  return (message) => stats.countError!(new Error(message));
}
