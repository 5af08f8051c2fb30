/**
 * Opens a NATS connection that rides out outages: a handler must survive a server restart and a cluster
 * failover and finish its work (protocol 1.1), so it never gives up reconnecting. nats.js re-subscribes every
 * subscription after a reconnect, learns the other cluster members from the server, and buffers what is
 * published while it is away.
 */
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";

/** The reconnect policy of {@link connectNats}: forever, each server retried after 1 s plus up to 1 s of jitter. */
export const RECONNECT_OPTIONS = {
  maxReconnectAttempts: -1,
  reconnectTimeWait: 1000,
  reconnectJitter: 1000,
} as const satisfies Partial<ConnectionOptions>;

/** Connects to `servers` (default `$NATS_URL`, else `nats://127.0.0.1:4222`) with {@link RECONNECT_OPTIONS}. */
export function connectNats(options: Partial<ConnectionOptions> = {}): Promise<NatsConnection> {
  return connect({
    servers: process.env.NATS_URL || "nats://127.0.0.1:4222",
    ...RECONNECT_OPTIONS,
    ...options,
  });
}
