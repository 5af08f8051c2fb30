/**
 * Protocol 1.1 handler rules over an in-memory wire: the receipt heartbeat (also while the request waits for a
 * free slot), heartbeats as requests with self-fencing when the request says `heartbeat_ack: true`, and budget
 * exhaustion as a cancel with reason `timeout` that never suppresses the reply.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Attempt } from "../src/attempt.js";
import { FIRST_HEARTBEAT_DELAY_MS, isLate } from "../src/heartbeater.js";
import { Cancelled, Retry } from "../src/errors.js";
import { Limiter } from "../src/limiter.js";
import type { TaskRequest } from "../src/request.js";
import type { Handler } from "../src/types.js";
import type { RequestOutcome } from "../src/wire.js";
import { FakeWire } from "./helpers/fake-wire.js";
import { cancelBody, encodeJson, makeRequest } from "./helpers/requests.js";

const noop = { warn() {}, error() {} };

function run(handler: Handler, request: TaskRequest, wire = new FakeWire(), limiter?: Limiter) {
  const attempt = new Attempt({ wire, request, payload: request.payload as never, handler, logger: noop, limiter });
  return { attempt, wire, reply: attempt.run() };
}

const aborted = (signal: AbortSignal) =>
  new Promise<Cancelled>((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    else signal.addEventListener("abort", () => resolve(signal.reason), { once: true });
  });

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** Resolves after `ms` on Node's timer list: timers due earlier (the first heartbeat's) have fired by then. */
const after = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe("receipt heartbeat", () => {
  it("is not sent by an attempt that replies before it is due", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 60_000 });
    const { wire, reply } = run(() => "quick", request);
    await reply;
    assert.equal(wire.json(request.heartbeat_subject).length, 0);
  });

  it("goes out min(250 ms, interval) after receipt, with no progress", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 60_000 });
    const wire = new FakeWire();
    let seen = -1;
    await run(async () => {
      await after(FIRST_HEARTBEAT_DELAY_MS + 50);
      seen = wire.json(request.heartbeat_subject).length;
    }, request, wire).reply;
    assert.equal(seen, 1);
    assert.deepEqual(Object.keys(wire.json(request.heartbeat_subject)[0] as object).sort(), [
      "attempt_token",
      "protocol",
      "task_id",
      "type",
    ]);
  });

  it("a request waiting for a free slot is heartbeated while it waits", async () => {
    const limiter = new Limiter(1);
    const wire = new FakeWire();
    const busy = gate();
    const first = run(() => busy.promise, makeRequest({ heartbeat_interval_ms: 60_000 }), wire, limiter);
    const waiting = makeRequest({ heartbeat_interval_ms: 10 });
    let ran = false;
    const second = run(() => void (ran = true), waiting, wire, limiter);
    await wire.next(waiting.heartbeat_subject);
    await wire.next(waiting.heartbeat_subject);
    assert.equal(ran, false, "still waiting for the slot, heartbeating all the same");
    busy.open();
    await Promise.all([first.reply, second.reply]);
    assert.equal(ran, true);
  });

  it("no heartbeats at all when heartbeat_interval_ms is 0", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 0, heartbeat_ack: true });
    const { wire, reply } = run(() => "ok", request);
    await reply;
    assert.equal(wire.published.length, 0);
  });
});

describe("heartbeats with heartbeat_ack", () => {
  it("are requests when the request says heartbeat_ack: true, plain publishes otherwise", async () => {
    const acked = makeRequest({ heartbeat_interval_ms: 60_000, heartbeat_ack: true });
    const plain = makeRequest({ heartbeat_interval_ms: 60_000 });
    const wire = new FakeWire();
    const slow = async () => {
      await after(FIRST_HEARTBEAT_DELAY_MS + 50);
      return null;
    };
    await run(slow, acked, wire).reply;
    await run(slow, plain, wire).reply;
    assert.deepEqual(
      wire.requests.map((r) => r.subject),
      [acked.heartbeat_subject],
    );
    assert.equal(wire.json(plain.heartbeat_subject).length, 1);
  });

  it("at most one is outstanding: periodic ones due meanwhile are skipped", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 5, heartbeat_ack: true });
    const wire = new FakeWire();
    wire.answer = () => new Promise<RequestOutcome>(() => {}); // never answered
    const { reply } = run(async (task) => {
      await aborted(task.signal); // fenced after 3 intervals without an ack
      return wire.published.length;
    }, request, wire);
    assert.equal(((await reply).body as any).result, 1, "only the receipt heartbeat, outstanding throughout");
  });

  it("an explicit heartbeat while one is outstanding goes out as the next request", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 60_000, heartbeat_ack: true });
    const wire = new FakeWire();
    const pending = gate();
    wire.answer = async (): Promise<RequestOutcome> => {
      if (wire.requests.length === 1) await pending.promise;
      return "ack";
    };
    const { reply } = run(async (task) => {
      task.heartbeat({ progress: 0.5, message: "half" });
      assert.equal(wire.published.length, 1, "queued behind the outstanding receipt heartbeat");
      const next = wire.next(request.heartbeat_subject);
      pending.open();
      const sent = await next;
      assert.equal(JSON.parse(new TextDecoder().decode(sent.data)).progress, 0.5);
      assert.equal(wire.requests.length, 2, "sent as a request");
    }, request, wire);
    await reply;
  });

  it("no responders fences the attempt: its signal aborts with reason lost, and the reply is still sent", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 60_000, heartbeat_ack: true });
    const wire = new FakeWire();
    wire.answer = () => "no_responders";
    const { reply } = run(async (task) => {
      const reason = await aborted(task.signal);
      assert.ok(reason instanceof Cancelled);
      assert.equal(reason.reason, "lost");
      assert.equal(reason.byDispatcher, false);
      return "finished anyway";
    }, request, wire);
    assert.equal(((await reply).body as any).result, "finished anyway");
  });

  it("no responders right after a reconnect is a missing ack, not a fence", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 60_000, heartbeat_ack: true });
    const wire = new FakeWire();
    wire.reconnectedAt = performance.now() + 1; // a reconnect newer than the last ack (receipt)
    const answered = gate();
    wire.answer = () => {
      answered.open();
      return "no_responders";
    };
    let signal!: AbortSignal;
    const { reply } = run(async (task) => {
      signal = task.signal;
      await answered.promise;
      await new Promise((r) => setImmediate(r));
    }, request, wire);
    await reply;
    assert.equal(signal.aborted, false);
  });

  it("fences after 3 intervals without an ack", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 20, heartbeat_ack: true });
    const wire = new FakeWire();
    const outcomes: RequestOutcome[] = ["ack", "ack"];
    wire.answer = () => outcomes.shift() ?? "timeout";
    const started = performance.now();
    const { reply } = run(async (task) => {
      const reason = await aborted(task.signal);
      assert.equal(reason.reason, "lost");
      return performance.now() - started;
    }, request, wire);
    const body = (await reply).body as any;
    // The second heartbeat (sent at ~20 ms) was the last acknowledged: lost at ~20 + 60 ms, never before.
    assert.ok(body.result >= 79, `fenced after ${body.result} ms`);
    const before = wire.requests.length;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(wire.requests.length, before, "no heartbeats after the attempt ended");
  });

  it("keeps running while heartbeats are acknowledged", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 5, heartbeat_ack: true });
    const wire = new FakeWire();
    const { reply } = run(async (task) => {
      while (wire.requests.length < 10) await wire.next(request.heartbeat_subject);
      return task.signal.aborted;
    }, request, wire);
    assert.equal(((await reply).body as any).result, false);
  });
});

describe("budget", () => {
  it("running out is a cancel with reason timeout, and the handler's late reply is still sent", async () => {
    const request = makeRequest({ budget_ms: 10 });
    const { reply } = run(async (task) => {
      const reason = await aborted(task.signal);
      assert.equal(reason.reason, "timeout");
      throw new Retry("late", "budget used up");
    }, request);
    const body = (await reply).body as any;
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "late");
    assert.equal(body.attempt_token, request.attempt_token);
  });
});

describe("retry_after_ms", () => {
  it("is clamped to 604800000 (7 days)", () => {
    assert.equal(new Retry("x", "y", { retryAfterMs: 1e15 }).retryAfterMs, 604_800_000);
    assert.equal(new Retry("x", "y", { retryAfterMs: Infinity }).retryAfterMs, 604_800_000);
    assert.equal(new Retry("x", "y", { retryAfterMs: 604_800_000 }).retryAfterMs, 604_800_000);
    assert.throws(() => new Retry("x", "y", { retryAfterMs: Number.NaN }), RangeError);
  });
});

describe("endpoint names", () => {
  it("replace characters micro does not allow with _, and two types with one name are refused", async () => {
    const { createService, endpointName } = await import("../src/service.js");
    assert.equal(endpointName("email:new"), "email_new");
    assert.equal(endpointName("a-b_C9"), "a-b_C9");
    const svc = createService({ name: "x", version: "1.0.0" }).handle("a:b", () => null);
    assert.throws(() => svc.handle("a_b", () => null), /task types a:b and a_b would share the micro endpoint name a_b/);
  });
});

/** A request with acks that looks sent ten intervals ago (attempt_deadline − budget_ms); its deadline is ahead. */
function lateRequest(intervalMs: number): TaskRequest {
  const now = Date.now();
  return makeRequest({
    heartbeat_interval_ms: intervalMs,
    heartbeat_ack: true,
    budget_ms: 40 * intervalMs,
    attempt_deadline: new Date(now + 30 * intervalMs).toISOString(),
  });
}

describe("late requests (SPEC §5.2)", () => {
  it("a late request whose heartbeat has no responders never runs: retry, cancelled, lost", async () => {
    const request = lateRequest(60_000);
    const wire = new FakeWire();
    wire.answer = () => "no_responders";
    let ran = false;
    const reply = await run(() => void (ran = true), request, wire).reply;
    assert.equal(ran, false);
    assert.equal(wire.requests.length, 1, "one heartbeat, sent at once");
    assert.equal(reply.body.status, "retry");
    assert.equal((reply.body as any).error.code, "cancelled");
    assert.match((reply.body as any).error.message, /lost/);
  });

  it("a late request whose heartbeat is not acknowledged within the interval never runs", async () => {
    const request = lateRequest(60_000);
    const wire = new FakeWire();
    wire.answer = () => "timeout";
    let ran = false;
    const reply = await run(() => void (ran = true), request, wire).reply;
    assert.equal(ran, false);
    assert.equal((reply.body as any).error.code, "cancelled");
  });

  it("a late request whose heartbeat is acknowledged runs, after the ack", async () => {
    const request = lateRequest(60_000);
    const wire = new FakeWire();
    let acks = 0;
    wire.answer = () => {
      acks++;
      return "ack";
    };
    let acksAtStart = -1;
    const reply = await run(() => {
      acksAtStart = acks;
      return "ran";
    }, request, wire).reply;
    assert.equal(acksAtStart, 1);
    assert.equal(reply.body.status, "ok");
    assert.equal((reply.body as any).result, "ran");
  });

  it("a fresh request that finishes within 250 ms sends no heartbeat", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 60_000, heartbeat_ack: true });
    const { wire, reply } = run(() => "quick", request);
    assert.equal((await reply).body.status, "ok");
    assert.equal(wire.published.length, 0);
  });

  it("isLate compares receipt with attempt_deadline − budget_ms against 3 intervals", () => {
    const deadline = new Date(10_000).toISOString(); // sent at -20 000 with a 30 s budget
    assert.equal(isLate(0, deadline, 30_000, 6_000), true);
    assert.equal(isLate(0, deadline, 30_000, 7_000), false);
    assert.equal(isLate(0, deadline, 30_000, 0), false);
  });
});

describe("late requests and cancels", () => {
  it("a cancel while a late request waits for its ack answers it at once, unrun", async () => {
    const request = lateRequest(60_000);
    const wire = new FakeWire();
    wire.answer = () => new Promise<RequestOutcome>(() => {}); // the ack never comes
    let ran = false;
    const { reply } = run(() => void (ran = true), request, wire);
    assert.equal(wire.requests.length, 1, "the heartbeat went out at once, on receipt");
    wire.publish(request.cancel_subject, encodeJson(cancelBody(request)));
    const r = await reply;
    assert.equal(ran, false);
    assert.equal((r.body as any).error.code, "cancelled");
  });
});
