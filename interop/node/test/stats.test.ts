/**
 * `nats micro stats` tells the truth (protocol 1.1): read from `$SRV.STATS` on a real nats-server, every
 * request counts once, retry and terminate replies and rejections count as errors, and processing time is the
 * handler's real wall time, not the near-zero synchronous part @nats-io/services would measure.
 */
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import type { NatsConnection } from "@nats-io/transport-node";
import { Retry, Terminate, connectNats, createService, type JetbridgeService } from "../src/index.js";
import { skipReason, startNatsServer, type NatsServer } from "./helpers/nats-server.js";
import { decodeJson, encodeJson, makeRequest } from "./helpers/requests.js";

let server: NatsServer;
let nc: NatsConnection;
let svc: JetbridgeService;
const SLEEP_MS = 200;

before(async () => {
  if (skipReason) return;
  server = await startNatsServer();
  nc = await connectNats({ servers: server.url });
  svc = createService({ name: "node-stats", version: "1.0.0", logger: { warn() {}, error() {} } })
    .handle("stats:work", async (task) => {
      const p = task.payload as { mode: string };
      await new Promise((r) => setTimeout(r, SLEEP_MS));
      if (p.mode === "retry") throw new Retry("busy", "try later");
      if (p.mode === "terminate") throw new Terminate("bad", "never");
      if (p.mode === "crash") throw new Error("boom");
      return "done";
    });
  await svc.start(nc);
  await nc.flush();
});

after(async () => {
  await svc?.drain(0);
  await nc?.close();
  await server?.stop();
});

it("$SRV.STATS counts failures as errors and the handler's real processing time", { skip: skipReason }, async () => {
  const subject = "jetbridge.task.stats:work";
  const send = async (body: unknown) =>
    decodeJson((await nc.request(subject, encodeJson(body), { timeout: 10_000 })).data);
  const modes = ["ok", "retry", "terminate", "crash", "ok"];
  const replies = await Promise.all(modes.map((mode) => send(makeRequest({ task_type: "stats:work", payload: { mode } }))));
  assert.deepEqual(
    replies.map((r) => r.status),
    ["ok", "retry", "terminate", "retry", "ok"],
  );
  // A rejection (not a task_request) is a request and an error too.
  assert.equal((await send({ protocol: 1, not: "a request" })).error.code, "bad_request");

  const stats = decodeJson((await nc.request("$SRV.STATS.node-stats", undefined, { timeout: 5000 })).data);
  const [endpoint] = stats.endpoints;
  assert.equal(endpoint.name, "stats_work");
  assert.equal(endpoint.num_requests, 6);
  assert.equal(endpoint.num_errors, 4);
  assert.equal(endpoint.last_error, "bad request: type: is required");
  // Five handlers slept SLEEP_MS each (nanoseconds in micro stats); timers never fire early.
  assert.ok(endpoint.processing_time >= 5 * SLEEP_MS * 1e6, `processing_time ${endpoint.processing_time} ns`);
  assert.equal(endpoint.average_processing_time, Math.round(endpoint.processing_time / 6));
});
