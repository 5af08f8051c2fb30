/**
 * The little the SDK needs from a NATS connection, as an interface: the attempt logic runs against this, so
 * unit tests can drive it with an in-memory fake and only the integration test needs a server.
 */
import { headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";

export interface Subscription {
  unsubscribe(): void;
}

/** How a request ended: answered, "no responders" (status 503), no answer in time, or failed otherwise. */
export type RequestOutcome = "ack" | "no_responders" | "timeout" | "failed";

export interface Wire {
  /** The server's max_payload (headers included), read when needed because a reconnect may change it. */
  readonly maxPayload: number;
  publish(subject: string, data: Uint8Array, headers?: Record<string, string>): void;
  subscribe(subject: string, onMessage: (data: Uint8Array) => void): Subscription;
  /** Sends a request and reports how it ended; never rejects. */
  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<RequestOutcome>;
  /**
   * `performance.now()` of the latest reconnect, or -Infinity. Right after a reconnect (a server restart, a
   * cluster failover) the dispatcher may not have re-subscribed yet, so "no responders" then proves nothing.
   */
  readonly reconnectedAt: number;
}

/** True for nats.js' "no responders" error, whichever copy of nats-core threw it (checked by name). */
export function isNoResponders(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 4; depth++) {
    if ((e as { name?: unknown }).name === "NoResponders") return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** NATS' default max_payload, used only until the server has said its own. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/** Converts plain headers to nats.js headers; undefined when there are none (so no header block is sent). */
export function toMsgHdrs(h: Record<string, string> | undefined): MsgHdrs | undefined {
  if (!h) return undefined;
  const entries = Object.entries(h);
  if (entries.length === 0) return undefined;
  const out = natsHeaders();
  for (const [k, v] of entries) out.set(k, v);
  return out;
}

/** A {@link Wire} over a nats.js connection. */
export function natsWire(nc: NatsConnection): Wire {
  let reconnectedAt = -Infinity;
  void (async () => {
    // Ends when the connection closes.
    for await (const s of nc.status()) if (s.type === "reconnect") reconnectedAt = performance.now();
  })().catch(() => {});
  return {
    get reconnectedAt() {
      return reconnectedAt;
    },
    async request(subject, data, timeoutMs) {
      try {
        await nc.request(subject, data, { timeout: Math.max(1, timeoutMs) });
        return "ack";
      } catch (err) {
        if (isNoResponders(err)) return "no_responders";
        return (err as { name?: unknown }).name === "TimeoutError" ? "timeout" : "failed";
      }
    },
    get maxPayload() {
      return nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
    },
    publish(subject, data, headers) {
      const h = toMsgHdrs(headers);
      nc.publish(subject, data, h ? { headers: h } : undefined);
    },
    subscribe(subject, onMessage) {
      return nc.subscribe(subject, {
        callback: (err, msg) => {
          if (!err) onMessage(msg.data);
        },
      });
    },
  };
}

/**
 * Replies to a request with plain headers. Takes the message as `unknown` on purpose: @nats-io/services pins its
 * own pre-release @nats-io/nats-core, so its ServiceMsg type differs from transport-node's Msg although both
 * deliver to the same connection at runtime; headers must come from transport-node's copy, which publishes them.
 */
export function respond(msg: unknown, data: Uint8Array, headers: Record<string, string>): boolean {
  const h = toMsgHdrs(headers);
  return (msg as Msg).respond(data, h ? { headers: h } : undefined);
}
