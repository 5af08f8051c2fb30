/**
 * The conformance handler as a process (dist/bin/conformance.js) against nats-server: its `ready` line, every
 * task type of interop/README.md, the events, and the SIGTERM drain that finishes the running attempt.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { skipReason, startNatsServer, type NatsServer } from "./helpers/nats-server.js";
import { cancelBody, decodeJson, encodeJson, makeRequest } from "./helpers/requests.js";
import type { TaskRequest } from "../src/request.js";

const script = fileURLToPath(new URL("../bin/conformance.js", import.meta.url));

interface Handler {
  child: ChildProcess;
  exit: Promise<number | null>;
}

/** Starts the conformance handler and resolves once it printed `ready`. */
async function startHandler(url: string, instance: string): Promise<Handler> {
  const child = spawn(process.execPath, [script], {
    env: { ...process.env, NATS_URL: url, JETBRIDGE_INSTANCE: instance },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exit = once(child, "exit").then(([code]) => code as number | null);
  let out = "";
  child.stdout!.setEncoding("utf8");
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (chunk: string) => {
      out += chunk;
      if (out.split("\n").includes("ready")) resolve();
    });
    exit.then((code) => reject(new Error(`conformance handler exited with ${code} before ready`)));
  });
  return { child, exit };
}

async function call(nc: NatsConnection, r: TaskRequest): Promise<{ body: any; headers: Record<string, string> }> {
  const msg = await nc.request(`jetbridge.task.${r.task_type}`, encodeJson(r), { timeout: 5000 });
  const headers: Record<string, string> = {};
  for (const k of msg.headers?.keys() ?? []) headers[k] = msg.headers!.get(k);
  return { body: decodeJson(msg.data), headers };
}

/** Resolves with the first event on the events subject that `match` accepts. */
function nextEvent(nc: NatsConnection, match: (e: any) => boolean): Promise<any> {
  const sub = nc.subscribe("jetbridge.conformance.events");
  return (async () => {
    for await (const m of sub) {
      const e = decodeJson(m.data);
      if (match(e)) {
        sub.unsubscribe();
        return e;
      }
    }
  })();
}

describe("conformance handler", { skip: skipReason }, () => {
  let server: NatsServer;
  let nc: NatsConnection;
  let handler: Handler;

  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    handler = await startHandler(server.url, "node-test-1");
  });

  after(async () => {
    if (handler?.child.exitCode === null) {
      handler.child.kill("SIGKILL");
      await handler.exit;
    }
    await nc?.close();
    await server?.stop();
  });

  it("registers jetbridge-conformance with one endpoint per task type", async () => {
    const info = decodeJson((await nc.request("$SRV.INFO.jetbridge-conformance", "", { timeout: 5000 })).data);
    assert.equal(info.version, "1.0.0");
    assert.equal(info.metadata["jetbridge.protocols"], "1,1.1");
    assert.match(info.metadata["jetbridge.sdk"], /^node\/\d+\.\d+\.\d+/);
    const types = info.endpoints.map((e: any) => e.metadata["jetbridge.task_type"]).sort();
    assert.deepEqual(types, [
      "conf:big", "conf:echo", "conf:fail", "conf:info", "conf:mw", "conf:mw_blocked", "conf:panic", "conf:retry_after",
      "conf:sleep", "conf:terminate",
    ]);
    assert.ok(info.endpoints.every((e: any) => e.queue_group === "jetbridge"));
  });

  it("conf:echo returns JSON and bytes unchanged, and publishes started", async () => {
    const r = makeRequest({ task_type: "conf:echo", payload: { x: ["héllo", 1] } });
    const started = nextEvent(nc, (e) => e.task_id === r.task_id);
    await nc.flush();
    assert.deepEqual((await call(nc, r)).body.result, { x: ["héllo", 1] });
    assert.deepEqual(await started, { event: "started", task_id: r.task_id, attempt: 1, instance: "node-test-1" });
    const b = makeRequest({ task_type: "conf:echo", payload_encoding: "base64", content_type: "text/csv", payload: "YSxiCg==" });
    const body = (await call(nc, b)).body;
    assert.deepEqual([body.result_encoding, body.content_type, body.result], ["base64", "text/csv", "YSxiCg=="]);
  });

  it("conf:info describes the attempt", async () => {
    const r = makeRequest({ task_type: "conf:info", attempt: 2, max_attempts: 7, budget_ms: 1234 });
    assert.deepEqual((await call(nc, r)).body.result, {
      instance: "node-test-1", lang: "node", task_id: r.task_id, attempt: 2, max_attempts: 7, queue: "TEST", budget_ms: 1234,
    });
  });

  it("conf:fail fails N times, then succeeds", async () => {
    const fail = await call(nc, makeRequest({ task_type: "conf:fail", attempt: 2, payload: { times: 2 } }));
    assert.deepEqual(fail.body.error, { code: "planned_failure", message: "failure 2 of 2" });
    assert.equal(fail.headers["Nats-Service-Error-Code"], "500");
    const ok = await call(nc, makeRequest({ task_type: "conf:fail", attempt: 3, payload: { times: 2 } }));
    assert.deepEqual(ok.body.result, { attempt: 3 });
  });

  it("conf:retry_after asks for its delay on attempt 1", async () => {
    const first = await call(nc, makeRequest({ task_type: "conf:retry_after", payload: { ms: 250 } }));
    assert.equal(first.body.status, "retry");
    assert.equal(first.body.error.code, "planned_failure");
    assert.equal(first.body.retry_after_ms, 250);
    assert.equal(first.headers["Nats-Service-Error-Code"], "429");
    assert.equal(first.headers["Jetbridge-Retry-After-Ms"], "250");
    const second = await call(nc, makeRequest({ task_type: "conf:retry_after", attempt: 2, payload: { ms: 250 } }));
    assert.deepEqual(second.body.result, { attempt: 2 });
  });

  it("conf:terminate terminates with its message", async () => {
    const { body, headers } = await call(nc, makeRequest({ task_type: "conf:terminate", payload: { message: "no way" } }));
    assert.equal(body.status, "terminate");
    assert.deepEqual(body.error, { code: "planned_terminate", message: "no way" });
    assert.equal(headers["Nats-Service-Error-Code"], "400");
  });

  it("conf:sleep heartbeats each step with progress", async () => {
    const r = makeRequest({ task_type: "conf:sleep", payload: { ms: 60, steps: 3 } });
    const sub = nc.subscribe(r.heartbeat_subject, { max: 3 });
    await nc.flush();
    const reply = call(nc, r);
    const beats: any[] = [];
    for await (const m of sub) beats.push(decodeJson(m.data));
    assert.deepEqual(
      beats.map((b) => [b.progress, b.message]),
      [[1 / 3, "step 1 of 3"], [2 / 3, "step 2 of 3"], [1, "step 3 of 3"]],
    );
    assert.deepEqual((await reply).body.result, { slept_ms: 60, attempt: 1 });
    const other = await call(nc, makeRequest({ task_type: "conf:sleep", attempt: 1, payload: { ms: 60000, only_attempt: 2 } }));
    assert.equal(other.body.status, "ok");
  });

  it("conf:sleep stops on a cancel and publishes cancelled with the reason", async () => {
    const r = makeRequest({ task_type: "conf:sleep", payload: { ms: 60000, steps: 1 } });
    const started = nextEvent(nc, (e) => e.task_id === r.task_id && e.event === "started");
    const cancelled = nextEvent(nc, (e) => e.task_id === r.task_id && e.event === "cancelled");
    await nc.flush();
    const reply = call(nc, r);
    await started; // published after the cancel SUB on the handler's connection
    nc.publish(r.cancel_subject, encodeJson(cancelBody(r, "operator")));
    assert.deepEqual(await cancelled, { event: "cancelled", task_id: r.task_id, attempt: 1, instance: "node-test-1", reason: "operator" });
    const { body } = await reply;
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "cancelled");
  });

  it("conf:sleep publishes cancelled with reason timeout when its budget runs out, and still replies", async () => {
    const r = makeRequest({ task_type: "conf:sleep", budget_ms: 50, payload: { ms: 60000 } });
    const cancelled = nextEvent(nc, (e) => e.task_id === r.task_id && e.event === "cancelled");
    await nc.flush();
    const reply = call(nc, r);
    assert.equal((await cancelled).reason, "timeout");
    const { body } = await reply;
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "cancelled");
  });

  it("contract defaults: conf:sleep ms 0 and steps below 1, conf:retry_after and conf:terminate messages", async () => {
    assert.deepEqual((await call(nc, makeRequest({ task_type: "conf:sleep", payload: { steps: -3 } }))).body.result, {
      slept_ms: 0,
      attempt: 1,
    });
    const retry = (await call(nc, makeRequest({ task_type: "conf:retry_after", payload: { ms: 1e15 } }))).body;
    assert.deepEqual([retry.error.message, retry.retry_after_ms], ["retry later", 604_800_000]);
    assert.equal((await call(nc, makeRequest({ task_type: "conf:terminate", payload: {} }))).body.error.message, "terminated");
  });

  it("conf:big returns bytes, or result_too_large past max_payload", async () => {
    const small = (await call(nc, makeRequest({ task_type: "conf:big", payload: { bytes: 5 } }))).body;
    assert.deepEqual([small.content_type, small.result], ["application/octet-stream", "YWFhYWE="]);
    const big = (await call(nc, makeRequest({ task_type: "conf:big", payload: { bytes: 1024 * 1024 } }))).body;
    assert.equal(big.status, "terminate");
    assert.equal(big.error.code, "result_too_large");
  });

  it("conf:panic becomes a retry with handler_error and the service lives on", async () => {
    const { body } = await call(nc, makeRequest({ task_type: "conf:panic" }));
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "handler_error");
    assert.equal((await call(nc, makeRequest({ task_type: "conf:echo", payload: 1 }))).body.result, 1);
  });

  it("conf:mw passes outer, inner, then the conf:mw* group; conf:mw_blocked is terminated before the handler", async () => {
    assert.deepEqual((await call(nc, makeRequest({ task_type: "conf:mw" }))).body.result, {
      trail: ["handler", "group", "inner", "outer"],
    });
    const { body } = await call(nc, makeRequest({ task_type: "conf:mw_blocked" }));
    assert.deepEqual([body.status, body.error.code, body.error.message], ["terminate", "mw_blocked", "blocked by middleware"]);
  });

  it("on SIGTERM finishes the running attempt, then exits 0", async () => {
    const r = makeRequest({ task_type: "conf:sleep", payload: { ms: 300, steps: 2 } });
    const started = nextEvent(nc, (e) => e.task_id === r.task_id);
    await nc.flush();
    const reply = call(nc, r);
    await started;
    handler.child.kill("SIGTERM");
    assert.deepEqual((await reply).body.result, { slept_ms: 300, attempt: 1 });
    assert.equal(await handler.exit, 0);
  });
});
