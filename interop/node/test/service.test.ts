/**
 * End to end against a real nats-server: a request answered, heartbeats, a cancel, the micro service
 * registration, rejections with their headers, result_too_large, and a graceful drain.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connect, headers, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { Cancelled, bytes, createService, type JetbridgeService } from "../src/index.js";
import type { TaskRequest } from "../src/request.js";
import { skipReason, startNatsServer, type NatsServer } from "./helpers/nats-server.js";
import { cancelBody, decodeJson, encodeJson, makeRequest, requestHeaders } from "./helpers/requests.js";

function gate<T = void>(): { promise: Promise<T>; open: (v: T) => void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => (open = r));
  return { promise, open };
}

/** Sends a task_request the way the dispatcher does (SPEC §3.1) and returns the raw reply. */
function send(nc: NatsConnection, r: TaskRequest | Record<string, unknown>, subject?: string): Promise<Msg> {
  const h = headers();
  if ((r as TaskRequest).task_id) for (const [k, v] of Object.entries(requestHeaders(r as TaskRequest))) h.set(k, v);
  return nc.request(subject ?? `jetbridge.task.${(r as TaskRequest).task_type}`, encodeJson(r), { timeout: 5000, headers: h });
}

/** The reply headers as a plain object, without the NATS status line. */
function headerObject(msg: Msg): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of msg.headers?.keys() ?? []) out[k] = msg.headers!.get(k);
  return out;
}

/** Resolves with the first `count` JSON messages on `subject` (subscribed before it returns). */
function collect(nc: NatsConnection, subject: string, count: number): Promise<any[]> {
  const got: any[] = [];
  const sub = nc.subscribe(subject, { max: count });
  return (async () => {
    for await (const m of sub) got.push(decodeJson(m.data));
    return got;
  })();
}

describe("service against nats-server", { skip: skipReason }, () => {
  let server: NatsServer;
  let nc: NatsConnection; // the handler side
  let client: NatsConnection; // plays the dispatcher
  let svc: JetbridgeService;
  const progressDone = gate();
  const cancelSeen = gate<unknown>();

  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    client = await connect({ servers: server.url });
    svc = createService({ name: "node-test", version: "1.2.3", metadata: { team: "tests" } })
      .handle("test:echo", (task) => task.payload)
      .handle("test:progress", async (task) => {
        task.heartbeat({ progress: 0.5, message: "half" });
        await progressDone.promise;
        return "finished";
      })
      .handle("test:wait", async (task) => {
        task.heartbeat(); // ordered after the cancel SUB on this connection: the test waits for it
        await new Promise((resolve) => task.signal.addEventListener("abort", resolve, { once: true }));
        cancelSeen.open(task.signal.reason);
        throw task.signal.reason;
      })
      .handle("test:big", () => bytes(new Uint8Array(2 * 1024 * 1024)), { metadata: { size: "big" } });
    await svc.start(nc);
    await nc.flush();
  });

  after(async () => {
    await svc?.drain(0);
    await nc?.close();
    await client?.close();
    await server?.stop();
  });

  it("answers a request end to end", async () => {
    const r = makeRequest({ task_type: "test:echo", payload: { n: [1, 2, 3] } });
    const msg = await send(client, r);
    assert.deepEqual(decodeJson(msg.data), {
      type: "io.jetbridge.v1.task_reply",
      protocol: 1,
      status: "ok",
      attempt_token: r.attempt_token,
      result_encoding: "json",
      result: { n: [1, 2, 3] },
    });
    assert.deepEqual(headerObject(msg), {});
  });

  it("echoes a binary payload as a binary result", async () => {
    const r = makeRequest({ task_type: "test:echo", payload_encoding: "base64", content_type: "image/png", payload: "iVBORw0KGgo=" });
    const body = decodeJson((await send(client, r)).data);
    assert.equal(body.result_encoding, "base64");
    assert.equal(body.content_type, "image/png");
    assert.equal(body.result, "iVBORw0KGgo=");
  });

  it("sends explicit and automatic heartbeats", async () => {
    const r = makeRequest({ task_type: "test:progress", heartbeat_interval_ms: 50 });
    const beats = collect(client, r.heartbeat_subject, 2);
    await client.flush();
    const reply = send(client, r);
    const [explicit, automatic] = await beats;
    progressDone.open();
    const base = { type: "io.jetbridge.v1.heartbeat", protocol: 1, task_id: r.task_id, attempt_token: r.attempt_token };
    assert.deepEqual(explicit, { ...base, progress: 0.5, message: "half" }, "the handler's own, at once");
    assert.deepEqual(automatic, base);
    assert.equal(decodeJson((await reply).data).result, "finished");
  });

  it("aborts the handler's signal on a cancel message", async () => {
    const r = makeRequest({ task_type: "test:wait" });
    const beat = collect(client, r.heartbeat_subject, 1);
    await client.flush();
    const reply = send(client, r);
    await beat;
    client.publish(r.cancel_subject, encodeJson(cancelBody(r, "operator")));
    const reason = await cancelSeen.promise;
    assert.ok(reason instanceof Cancelled);
    assert.equal(reason.reason, "operator");
    const msg = await reply;
    const body = decodeJson(msg.data);
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "cancelled");
    assert.equal(msg.headers?.get("Nats-Service-Error-Code"), "500");
  });

  it("rejects another protocol version with 505 and supported_protocols", async () => {
    const r = { ...makeRequest(), type: "io.jetbridge.v2.task_request", protocol: 2 };
    const msg = await send(client, r, "jetbridge.task.test:echo");
    const body = decodeJson(msg.data);
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "unsupported_protocol");
    assert.deepEqual(body.supported_protocols, [1]);
    assert.equal(body.attempt_token, r.attempt_token);
    assert.equal(msg.headers?.get("Nats-Service-Error-Code"), "505");
  });

  it("terminates a body that is not JSON with bad_request, 400", async () => {
    const msg = await client.request("jetbridge.task.test:echo", "{oops", { timeout: 5000 });
    assert.equal(decodeJson(msg.data).error.code, "bad_request");
    assert.equal(msg.headers?.get("Nats-Service-Error-Code"), "400");
  });

  it("terminates a task type it has no handler for", async () => {
    const r = makeRequest({ task_type: "test:nobody" });
    const msg = await send(client, r, "jetbridge.task.test:echo");
    const body = decodeJson(msg.data);
    assert.equal(body.status, "terminate");
    assert.equal(body.error.code, "unknown_task_type");
  });

  it("replies result_too_large when the result exceeds the server's max_payload", async () => {
    const msg = await send(client, makeRequest({ task_type: "test:big" }));
    const body = decodeJson(msg.data);
    assert.equal(body.status, "terminate");
    assert.equal(body.error.code, "result_too_large");
  });

  it("registers a micro service with the jetbridge metadata", async () => {
    const info = decodeJson((await client.request("$SRV.INFO.node-test", "", { timeout: 5000 })).data);
    assert.equal(info.name, "node-test");
    assert.equal(info.version, "1.2.3");
    assert.deepEqual(info.metadata, { team: "tests", "jetbridge.protocols": "1,1.1", "jetbridge.sdk": "node/0.1.0" });
    const byType = Object.fromEntries(info.endpoints.map((e: any) => [e.metadata["jetbridge.task_type"], e]));
    assert.deepEqual(Object.keys(byType).sort(), ["test:big", "test:echo", "test:progress", "test:wait"]);
    assert.equal(byType["test:echo"].subject, "jetbridge.task.test:echo");
    assert.equal(byType["test:echo"].name, "test_echo");
    assert.equal(byType["test:echo"].queue_group, "jetbridge");
    assert.equal(byType["test:big"].metadata.size, "big");
    const stats = decodeJson((await client.request("$SRV.STATS.node-test", "", { timeout: 5000 })).data);
    const echo = stats.endpoints.find((e: any) => e.name === "test_echo");
    assert.ok(echo.num_requests >= 1);
    // The rejections sent to test:echo above (protocol 2, bad JSON, unknown type) count as errors.
    assert.ok(echo.num_errors >= 3, `num_errors ${echo.num_errors}`);
    assert.equal(stats.endpoints.find((e: any) => e.name === "test_big").num_errors, 1);
  });
});

describe("drain against nats-server", { skip: skipReason }, () => {
  let server: NatsServer;
  before(async () => {
    server = await startNatsServer();
  });
  after(async () => {
    await server?.stop();
  });

  it("stops taking requests, lets the running attempt reply, then resolves", async () => {
    const nc = await connect({ servers: server.url });
    const client = await connect({ servers: server.url });
    const started = gate();
    const finish = gate();
    const svc = createService({ name: "node-drain", version: "1.0.0", subjectPrefix: "drain.test" }).handle(
      "slow",
      async () => {
        started.open();
        await finish.promise;
        return "late but fine";
      },
    );
    await svc.start(nc);
    await nc.flush();
    const events: string[] = [];
    const r = makeRequest({ task_type: "slow" });
    const reply = send(client, r, "drain.test.slow");
    await started.promise;
    const drained = svc.drain().then(() => events.push("drained"));
    assert.equal(svc.inFlight, 1);
    // drain() unsubscribes the endpoints at once; a flush on the handler's connection makes sure the server
    // has seen that, so a new request finds no responder while the first attempt is still running.
    await nc.flush();
    await assert.rejects(send(client, makeRequest({ task_type: "slow" }), "drain.test.slow"));
    events.push("released");
    finish.open();
    await drained;
    assert.deepEqual(events, ["released", "drained"], "drain waited for the running attempt");
    assert.equal(decodeJson((await reply).data).result, "late but fine");
    await nc.close();
    await client.close();
  });

  it("aborts attempts still running when the grace period ends, and still replies", async () => {
    const nc = await connect({ servers: server.url });
    const client = await connect({ servers: server.url });
    const started = gate();
    const svc = createService({ name: "node-drain2", version: "1.0.0", subjectPrefix: "drain2.test" }).handle(
      "stubborn",
      async (task) => {
        started.open();
        await new Promise((resolve) => task.signal.addEventListener("abort", resolve, { once: true }));
        return { reason: (task.signal.reason as Cancelled).reason };
      },
    );
    await svc.start(nc);
    await nc.flush();
    const reply = send(client, makeRequest({ task_type: "stubborn" }), "drain2.test.stubborn");
    await started.promise;
    await svc.drain(10);
    assert.deepEqual(decodeJson((await reply).data).result, { reason: "drain" });
    await nc.close();
    await client.close();
  });
});
