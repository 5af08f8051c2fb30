/** The example under examples/ runs as the README says, answers a task, and stops cleanly on SIGTERM. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { skipReason, startNatsServer, type NatsServer } from "./helpers/nats-server.js";
import { packageRoot } from "./helpers/paths.js";
import { decodeJson, encodeJson, makeRequest } from "./helpers/requests.js";

let server: NatsServer;
let nc: NatsConnection;

before(async () => {
  if (skipReason) return;
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
});

after(async () => {
  await nc?.close();
  await server?.stop();
});

it("examples/wordcount.js counts words and drains on SIGTERM", { skip: skipReason }, async () => {
  const child = spawn(process.execPath, [join(packageRoot, "examples/wordcount.js")], {
    env: { ...process.env, NATS_URL: server.url },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exit = once(child, "exit");
  let out = "";
  child.stdout.setEncoding("utf8");
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (s: string) => {
      out += s;
      if (out.includes("wordcount: handling text:wordcount")) resolve();
    });
    exit.then(() => reject(new Error(`example exited early:\n${out}`)));
  });
  try {
    const r = makeRequest({ task_type: "text:wordcount", payload: { text: "The cat and the hat; the end." } });
    const body = decodeJson((await nc.request("jetbridge.task.text:wordcount", encodeJson(r), { timeout: 5000 })).data);
    assert.deepEqual(body.result, { words: 7, distinct: 5, top: { the: 3, cat: 1, and: 1 } });
    const bad = makeRequest({ task_type: "text:wordcount", payload: [1, 2] });
    const badBody = decodeJson((await nc.request("jetbridge.task.text:wordcount", encodeJson(bad), { timeout: 5000 })).data);
    assert.equal(badBody.error.code, "bad_payload");
  } finally {
    child.kill("SIGTERM");
  }
  assert.deepEqual(await exit, [0, null]);
});
