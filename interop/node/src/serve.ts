/**
 * Runs a service as a process: connects to NATS, starts the service, and on SIGTERM or SIGINT drains it and
 * closes the connection, which is what orchestrators expect of a replica being stopped.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats } from "./connect.js";
import type { JetbridgeService } from "./service.js";

export interface ServeOptions {
  /**
   * Server URL(s); default `$NATS_URL`, else `nats://127.0.0.1:4222`. The connection reconnects forever
   * ({@link connectNats}), so a server restart or a cluster failover does not stop the service.
   */
  servers?: string | string[];
  /** Serve on this connection instead of opening one; it is drained and closed on shutdown all the same. */
  connection?: NatsConnection;
  /** Signals that start a graceful shutdown; default SIGTERM and SIGINT. */
  signals?: NodeJS.Signals[];
}

export interface Serving {
  readonly nc: NatsConnection;
  /** Resolves once a shutdown finished; rejects if the connection closed before one was asked for. */
  readonly done: Promise<void>;
  /** Drains the service and closes the connection, as a signal does. */
  shutdown(): Promise<void>;
}

/** Connects, starts `service`, and drains it on the first of `signals`. */
export async function serve(service: JetbridgeService, options: ServeOptions = {}): Promise<Serving> {
  const nc =
    options.connection ??
    (await connectNats({
      ...(options.servers ? { servers: options.servers } : {}),
      name: `${service.name} ${service.version}`,
    }));
  await service.start(nc);
  await nc.flush();

  const signals = options.signals ?? ["SIGTERM", "SIGINT"];
  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      for (const s of signals) process.off(s, onSignal);
      await service.drain();
      if (!nc.isClosed()) await nc.drain();
    })();
    return stopping;
  };
  const onSignal = () => void shutdown();
  for (const s of signals) process.on(s, onSignal);

  const done = nc.closed().then(async (err) => {
    if (!stopping) {
      for (const s of signals) process.off(s, onSignal);
      throw err ?? new Error("NATS connection closed");
    }
    await stopping;
  });
  return { nc, done, shutdown };
}
