import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { Registry } from "prom-client";

import { Retry, Terminate, type Task } from "../src/index.js";
import { prometheusMetrics } from "../src/prometheus.js";
import { freePort } from "./helpers/nats-server.js";
import { packageRoot } from "./helpers/paths.js";

function task(type: string, signal: AbortSignal = new AbortController().signal): Task {
  return { id: "t1", type, queue: "Q", attempt: 1, budgetMs: 1000, signal } as unknown as Task;
}

/** The registry's samples of `name`, as "label=value,... value" lines, sorted. */
async function samples(registry: Registry, name: string): Promise<string[]> {
  const metric = registry.getSingleMetric(name);
  assert.ok(metric, `${name} is registered`);
  const { values } = await metric.get();
  return values
    .map((v) => `${Object.entries(v.labels).sort().map(([k, l]) => `${k}=${l}`).join(",")} ${v.value}`)
    .sort();
}

test("the middleware counts attempts by type and outcome, times them and tracks those running", async () => {
  const registry = new Registry();
  const mw = prometheusMetrics({ registry });
  const running: number[] = [];
  assert.equal(
    await mw(task("email:send"), async () => {
      const gauge = await registry.getSingleMetric("jetbridge_handler_in_progress")!.get();
      running.push(gauge.values[0]!.value);
      return 7;
    }),
    7,
  );
  await mw(task("email:send"), async () => "ok");
  await assert.rejects(async () => mw(task("email:send"), async () => { throw new Retry("smtp_busy", "later"); }), Retry);
  await assert.rejects(async () => mw(task("email:send"), async () => { throw new Terminate("bad_address", "no"); }), Terminate);
  await assert.rejects(async () => mw(task("report:build"), async () => { throw new Error("boom"); }), /boom/);
  const aborted = new AbortController();
  aborted.abort();
  // A second middleware on the same registry (another service) shares the metrics.
  await assert.rejects(
    async () => prometheusMetrics({ registry })(task("report:build", aborted.signal), async () => { throw new Error("gave up"); }),
    /gave up/,
  );

  assert.deepEqual(running, [1]);
  assert.deepEqual(await samples(registry, "jetbridge_handler_attempts_total"), [
    "outcome=cancelled,type=report:build 1",
    "outcome=error,type=report:build 1",
    "outcome=ok,type=email:send 2",
    "outcome=retry,type=email:send 1",
    "outcome=terminate,type=email:send 1",
  ]);
  assert.deepEqual(await samples(registry, "jetbridge_handler_in_progress"), ["type=email:send 0", "type=report:build 0"]);
  const text = await registry.metrics();
  assert.match(text, /^jetbridge_handler_duration_seconds_count\{type="email:send",outcome="ok"\} 2$/m);
  assert.match(text, /^jetbridge_handler_duration_seconds_bucket\{le="3600",type="email:send",outcome="retry"\} 1$/m);
});

/** The guide's indented sample (README.md, "Metrics"), dedented. */
function guideSample(): string {
  const lines = readFileSync(join(packageRoot, "README.md"), "utf8").split("\n");
  const start = lines.indexOf('    import { prometheusMetrics } from "jetbridge/prometheus";') - 2;
  assert.ok(start >= 0, "README.md has the Metrics sample");
  const end = lines.findIndex((line, i) => i > start && !line.startsWith("    "));
  return lines.slice(start, end).map((line) => line.slice(4)).join("\n");
}

test("the guide's sample serves the metrics of an attempt on /metrics", async () => {
  const port = await freePort();
  const sample = guideSample();
  assert.match(sample, /\.listen\(9100\)/);
  // Inside the package, so that `jetbridge/prometheus` resolves to this build; `service` stands for a real one.
  const file = join(packageRoot, "dist", `readme-metrics-${process.pid}.mjs`);
  writeFileSync(file, [
    "let middleware;",
    "const service = { use: (mw) => { middleware = mw; } };",
    sample.replace(".listen(9100)", `.listen(${port}, "127.0.0.1", () => console.log("listening"))`),
    "await middleware({ id: 't1', type: 'greet', signal: new AbortController().signal }, async () => 'hi');",
    "console.log('ran');",
  ].join("\n"));
  const child = spawn(process.execPath, [file], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    let out = "";
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding("utf8").on("data", (s: string) => {
        out += s;
        if (out.includes("listening") && out.includes("ran")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`the sample exited (${code}): ${out}`)));
    });
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(text, /^jetbridge_handler_attempts_total\{type="greet",outcome="ok"\} 1$/m);
  } finally {
    child.kill();
    rmSync(file, { force: true });
  }
});
