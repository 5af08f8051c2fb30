/**
 * Outages against real nats-servers: a handler rides out a server restart and a cluster failover, finishing the
 * attempt it was running and serving new ones after; a micro service whose subscription ends ("required
 * subscription $SRV.PING stopped") is registered again instead of taking the process down.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, createService, serve, type Logger, type Serving } from "../src/index.js";
import { freePort, skipReason, startNatsServer } from "./helpers/nats-server.js";
import { decodeJson, encodeJson, makeRequest } from "./helpers/requests.js";

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** Resolves at the connection's next status event of `type`. */
async function nextStatus(nc: NatsConnection, type: string): Promise<void> {
  for await (const s of nc.status()) if (s.type === type) return;
  throw new Error(`connection closed before ${type}`);
}

/** A service with a task type that holds until the test releases it, and an echo. */
function holdingService(name: string, logger: Logger = { warn() {}, error() {} }) {
  const started = gate();
  const release = gate();
  const service = createService({ name, version: "1.0.0", logger })
    .handle("test:hold", async () => {
      started.open();
      await release.promise;
      return "held";
    })
    .handle("test:echo", (task) => task.payload);
  return { service, started, release };
}

/** Sends a task_request on its subject; the reply is awaited across outages (nats.js re-subscribes its inbox). */
async function send(nc: NatsConnection, type: string, payload: unknown = null): Promise<any> {
  const r = makeRequest({ task_type: type, payload: payload as never });
  const msg = await nc.request(`jetbridge.task.${type}`, encodeJson(r), { timeout: 60_000 });
  return decodeJson(msg.data);
}

/** Waits until `nc` reaches the service's $SRV.PING (interest crosses a cluster route asynchronously). */
async function reachable(nc: NatsConnection, name: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await nc.request(`$SRV.PING.${name}`, undefined, { timeout: 1000 });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

describe("reconnect", { skip: skipReason }, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it("a nats-server restart mid-attempt: the attempt replies after it, and new tasks are served", async () => {
    const server = await startNatsServer();
    cleanup.push(() => server.stop());
    const { service, started, release } = holdingService("node-restart");
    const serving: Serving = await serve(service, { servers: server.url, signals: [] });
    cleanup.push(() => serving.shutdown());
    // nats.js gives up after 10 tries by default (about 20 s), then micro stops "required subscription
    // $SRV.PING stopped" and the connection closes: serve's connection must never give up.
    assert.equal((serving.nc as unknown as { options: { maxReconnectAttempts: number } }).options.maxReconnectAttempts, -1);
    let crashed: unknown;
    serving.done.catch((err) => (crashed = err ?? "closed"));
    const client = await connectNats({ servers: server.url });
    cleanup.push(() => client.close());

    const held = send(client, "test:hold");
    await started.promise;
    const handlerBack = nextStatus(serving.nc, "reconnect");
    const clientBack = nextStatus(client, "reconnect");
    await server.restart();
    await Promise.all([handlerBack, clientBack]);
    // Subscriptions are re-sent before "reconnect" is reported, but the server may not have read them yet: a
    // flush's PONG says it has (each connection is read in order). Without it the reply can beat the client's
    // re-subscribed inbox, which is the requester's problem, not the handler's.
    await Promise.all([client.flush(), serving.nc.flush()]);
    release.open();
    assert.equal((await held).result, "held");
    assert.deepEqual((await send(client, "test:echo", { after: "restart" })).result, { after: "restart" });
    await reachable(client, "node-restart");
    assert.equal(crashed, undefined);
    assert.equal(serving.nc.isClosed(), false);
  });

  it("a cluster failover mid-attempt: the handler moves to the other node and finishes", async () => {
    const [routeA, routeB] = [await freePort(), await freePort()];
    const cluster = (own: number, other: number) => [
      "--cluster_name",
      "jbtest",
      "--cluster",
      `nats://127.0.0.1:${own}`,
      "--routes",
      `nats://127.0.0.1:${other}`,
    ];
    const a = await startNatsServer({ jetstream: false, args: cluster(routeA, routeB) });
    cleanup.push(() => a.stop());
    const b = await startNatsServer({ jetstream: false, args: cluster(routeB, routeA) });
    cleanup.push(() => b.stop());

    const { service, started, release } = holdingService("node-failover");
    const nc = await connectNats({ servers: [a.url, b.url], noRandomize: true });
    const serving = await serve(service, { connection: nc, signals: [] });
    cleanup.push(() => serving.shutdown());
    let crashed: unknown;
    serving.done.catch((err) => (crashed = err ?? "closed"));
    const client = await connectNats({ servers: b.url });
    cleanup.push(() => client.close());
    await reachable(client, "node-failover");

    const held = send(client, "test:hold");
    await started.promise;
    const moved = nextStatus(nc, "reconnect");
    await a.stop();
    await moved;
    await nc.flush(); // the endpoints' subscriptions are on node B now (see the restart case)
    assert.equal(nc.getServer(), `127.0.0.1:${b.port}`);
    release.open();
    assert.equal((await held).result, "held");
    assert.deepEqual((await send(client, "test:echo", [1, 2])).result, [1, 2]);
    assert.equal(crashed, undefined);
  });

  it("a micro service whose subscription ends is registered again, keeping its stats", async () => {
    const server = await startNatsServer();
    cleanup.push(() => server.stop());
    const again = gate();
    const logger = {
      warn: (m: string) => void (m.includes("registered again") && again.open()),
      error() {},
    };
    const { service } = holdingService("node-resub", logger);
    const nc = await connectNats({ servers: server.url });
    cleanup.push(() => nc.close());
    await service.start(nc);
    cleanup.push(() => service.drain(0));
    assert.deepEqual((await send(nc, "test:echo", 1)).result, 1);

    // What nats.js does when a subscription is closed under the service: micro stops itself with
    // "required subscription $SRV.PING... stopped".
    const micro = (service as unknown as { micro: { internal: Array<{ sub: { unsubscribe(): void } }> } }).micro;
    micro.internal[0]!.sub.unsubscribe();
    await again.promise;
    await nc.flush();
    assert.deepEqual((await send(nc, "test:echo", 2)).result, 2);
    const stats = decodeJson((await nc.request("$SRV.STATS.node-resub", undefined, { timeout: 5000 })).data);
    const echo = stats.endpoints.find((e: any) => e.name === "test_echo");
    assert.equal(echo.num_requests, 2, "counted across the re-registration");
  });
});
