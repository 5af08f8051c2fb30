import assert from "node:assert/strict";
import { test } from "node:test";

import { Registry } from "prom-client";

import { Retry, Terminate, type Task } from "../src/index.js";
import { prometheusMetrics } from "../src/prometheus.js";

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
