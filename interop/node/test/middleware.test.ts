/**
 * Middleware (issue 20): order, per-pattern groups, short-circuits, changed results and tasks, the built-in
 * error recovery (outermost, so middleware sees raw errors), logging and the timeout, end to end against a
 * real nats-server where the wire matters and over compose() where it does not.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { Attempt } from "../src/attempt.js";
import { Cancelled, Retry, Terminate, connectNats, createService, logging, timeout, type AttemptLog, type JetbridgeService, type Task } from "../src/index.js";
import { compose, matches, recover } from "../src/middleware.js";
import { FakeWire } from "./helpers/fake-wire.js";
import { skipReason, startNatsServer, type NatsServer } from "./helpers/nats-server.js";
import { decodeJson, encodeJson, makeRequest, requestHeaders } from "./helpers/requests.js";

const quiet = { warn() {}, error() {} };

/** Runs `handler` (already wrapped) as one attempt over an in-memory wire; returns the reply body. */
async function attempt(handler: (task: Task) => unknown, overrides: Record<string, unknown> = {}): Promise<any> {
  const request = makeRequest(overrides);
  const a = new Attempt({ wire: new FakeWire(), request, payload: request.payload as never, handler, logger: quiet });
  return (await a.run()).body;
}

describe("middleware on a service", { skip: skipReason }, () => {
  let server: NatsServer;
  let nc: NatsConnection;
  let svc: JetbridgeService;
  const trail: string[] = [];

  before(async () => {
    server = await startNatsServer();
    nc = await connectNats({ servers: server.url });
    svc = createService({ name: "node-mw", version: "1.0.0", logger: quiet })
      .use(async (task, next) => {
        trail.push(`all> ${task.type}`);
        try {
          return await next();
        } finally {
          trail.push(`<all ${task.type}`);
        }
      })
      .use("email:*", async (task, next) => {
        trail.push("email>");
        const p = task.payload as { block?: string } | null;
        if (p?.block === "terminate") throw new Terminate("blocked", "blocked by middleware");
        if (p?.block === "retry") throw new Retry("later", "not now", { retryAfterMs: 5 });
        if (p?.block === "answer") return { from: "middleware" };
        const result = (await next()) as Record<string, unknown>;
        trail.push("<email");
        return { ...result, stamped: true };
      })
      .handle("email:new", (task) => {
        trail.push("handler");
        return { to: (task.payload as { to: string }).to };
      })
      .handle("test:headers", (task) => ({ ...task.headers }))
      .handle("sms:new", () => {
        trail.push("handler");
        return "sms";
      });
    await svc.start(nc);
    await nc.flush();
  });

  after(async () => {
    await svc?.drain(0);
    await nc?.close();
    await server?.stop();
  });

  const call = async (type: string, payload: unknown) =>
    decodeJson((await nc.request(`jetbridge.task.${type}`, encodeJson(makeRequest({ task_type: type, payload: payload as never })), { timeout: 5000 })).data);

  it("runs in the order of use(), groups only on their pattern, and may change the result", async () => {
    trail.length = 0;
    assert.deepEqual((await call("email:new", { to: "ada" })).result, { to: "ada", stamped: true });
    assert.deepEqual(trail, ["all> email:new", "email>", "handler", "<email", "<all email:new"]);
    trail.length = 0;
    assert.equal((await call("sms:new", {})).result, "sms");
    assert.deepEqual(trail, ["all> sms:new", "handler", "<all sms:new"]);
  });

  it("short-circuits: terminate, retry or a result, without running the handler", async () => {
    trail.length = 0;
    const t = await call("email:new", { block: "terminate" });
    assert.deepEqual([t.status, t.error.code], ["terminate", "blocked"]);
    const r = await call("email:new", { block: "retry" });
    assert.deepEqual([r.status, r.error.code, r.retry_after_ms], ["retry", "later", 5]);
    assert.deepEqual((await call("email:new", { block: "answer" })).result, { from: "middleware" });
    assert.ok(!trail.includes("handler"));
  });

  it("the task carries the request's headers, for middleware", async () => {
    const r = makeRequest({ task_type: "test:headers", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" });
    const h = headers();
    for (const [k, v] of Object.entries(requestHeaders(r))) h.set(k, v);
    h.set("traceparent", r.traceparent!);
    const body = decodeJson((await nc.request("jetbridge.task.test:headers", encodeJson(r), { timeout: 5000, headers: h })).data);
    assert.equal(body.result["Jetbridge-Task-Id"], r.task_id);
    assert.equal(body.result.traceparent, r.traceparent);
  });

  it("refuses bad patterns and late use()", () => {
    assert.throws(() => createService({ name: "x", version: "1.0.0" }).use("email:*:x*", async (_t, n) => n()), TypeError);
    assert.throws(() => createService({ name: "x", version: "1.0.0" }).use("a b", async (_t, n) => n()), TypeError);
    assert.throws(() => svc.use(async (_t, n) => n()), /before start/);
  });
});

describe("compose and the built-ins", () => {
  it("patterns: *, exact, prefix*", () => {
    assert.ok(matches("*", "a:b"));
    assert.ok(matches("email:*", "email:new"));
    assert.ok(!matches("email:*", "sms:new"));
    assert.ok(matches("email:new", "email:new"));
    assert.ok(!matches("email:new", "email:new2"));
  });

  it("global middleware run outside every group, whatever the order of the calls", async () => {
    const trail: string[] = [];
    const tag = (name: string) => async (_t: Task, next: () => Promise<unknown>) => {
      trail.push(name);
      return next();
    };
    const handler = compose(
      [
        { pattern: "*", middleware: tag("outer"), global: true },
        { pattern: "email:*", middleware: tag("group") },
        { pattern: "*", middleware: tag("inner"), global: true },
        { pattern: "*", middleware: tag("every-type group") },
      ],
      "email:new",
      () => trail.push("handler"),
    );
    await attempt(handler);
    assert.deepEqual(trail, ["outer", "inner", "group", "every-type group", "handler"]);
  });

  it("recovery is outermost: middleware sees the raw error, the reply is handler_error", async () => {
    let seen: unknown;
    const handler = compose(
      [
        { pattern: "*", middleware: recover(quiet) },
        { pattern: "*", middleware: async (_t, next) => next().catch((e) => Promise.reject((seen = e))) },
      ],
      "test:echo",
      () => {
        throw new TypeError("boom");
      },
    );
    const body = await attempt(handler);
    assert.ok(seen instanceof TypeError);
    assert.deepEqual([body.status, body.error.code, body.error.message], ["retry", "handler_error", "boom"]);
  });

  it("next(task) hands a changed task to the rest of the chain; next() twice is an error", async () => {
    const handler = compose(
      [{ pattern: "*", middleware: (task, next) => next({ ...task, payload: { changed: true } }) }],
      "test:echo",
      (task) => task.payload,
    );
    assert.deepEqual((await attempt(handler)).result, { changed: true });
    const twice = compose([{ pattern: "*", middleware: async (_t, next) => (await next(), next()) }], "test:echo", () => 1);
    assert.match((await attempt(twice)).error.message, /next\(\) called twice/);
  });

  it("logging writes one record per attempt with its outcome", async () => {
    const records: AttemptLog[] = [];
    const log = logging((r) => records.push(r));
    await attempt(compose([{ pattern: "*", middleware: log }], "test:echo", () => 1));
    await attempt(
      compose([{ pattern: "*", middleware: log }], "test:echo", () => {
        throw new Terminate("bad", "no");
      }),
    );
    assert.deepEqual(
      records.map((r) => [r.event, r.task_type, r.attempt, r.outcome, r.error_code]),
      [
        ["task_done", "test:echo", 1, "ok", undefined],
        ["task_done", "test:echo", 1, "terminate", "bad"],
      ],
    );
    assert.ok(records.every((r) => r.duration_ms >= 0));
  });

  it("timeout replies retry timeout when the handler ignores its signal, and aborts the signal it sees", async () => {
    let inner: AbortSignal | undefined;
    const handler = compose([{ pattern: "*", middleware: timeout(20) }], "test:echo", (task) => {
      inner = task.signal;
      return new Promise(() => {}); // never settles, ignores its signal
    });
    const body = await attempt(handler);
    assert.deepEqual([body.status, body.error.code], ["retry", "timeout"]);
    assert.ok(inner?.aborted);
    assert.ok(inner?.reason instanceof Cancelled && inner.reason.reason === "timeout");
  });

  it("timeout defaults to the attempt's budget and leaves a quick handler alone", async () => {
    const handler = compose([{ pattern: "*", middleware: timeout() }], "test:echo", () => "quick");
    assert.equal((await attempt(handler, { budget_ms: 1000 })).result, "quick");
  });
});
