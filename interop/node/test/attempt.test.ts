/**
 * The attempt lifecycle over an in-memory wire: automatic heartbeats, cancel and budget aborts, the
 * concurrency limit, and how return values and errors become replies (including result_too_large).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Attempt } from "../src/attempt.js";
import { Bytes, bytes } from "../src/bytes.js";
import { Cancelled, Retry, Terminate } from "../src/errors.js";
import { Limiter } from "../src/limiter.js";
import { encodeReply } from "../src/reply.js";
import type { TaskRequest } from "../src/request.js";
import type { Handler, Task } from "../src/types.js";
import { FakeWire } from "./helpers/fake-wire.js";
import { cancelBody, decodeJson, encodeJson, makeRequest } from "./helpers/requests.js";

const noop = { warn() {}, error() {} };

function run(handler: Handler, request: TaskRequest = makeRequest(), wire = new FakeWire(), limiter?: Limiter) {
  const attempt = new Attempt({ wire, request, payload: request.payload as never, handler, logger: noop, limiter });
  return { attempt, wire, request, reply: attempt.run() };
}

/** A promise with its resolve function, for handlers that wait for the test. */
function gate<T = void>(): { promise: Promise<T>; open: (v: T) => void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => (open = r));
  return { promise, open };
}

const aborted = (signal: AbortSignal) =>
  new Promise<unknown>((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    else signal.addEventListener("abort", () => resolve(signal.reason), { once: true });
  });

describe("task fields", () => {
  it("exposes the request as typed fields", async () => {
    const request = makeRequest({
      attempt: 2,
      max_attempts: 5,
      deadline: "2030-01-01T00:00:00+02:00",
      traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    });
    let seen!: Task;
    await run((task) => void (seen = task), request).reply;
    assert.equal(seen.id, request.task_id);
    assert.equal(seen.type, "test:echo");
    assert.equal(seen.queue, "TEST");
    assert.equal(seen.attempt, 2);
    assert.equal(seen.maxAttempts, 5);
    assert.equal(seen.budgetMs, 60_000);
    assert.equal(seen.deadline?.toISOString(), "2029-12-31T22:00:00.000Z");
    assert.equal(seen.created.toISOString(), request.created);
    assert.equal(seen.attemptDeadline.toISOString(), request.attempt_deadline);
    assert.deepEqual(seen.payload, { hello: "world" });
    assert.equal(seen.contentType, "application/json");
    assert.equal(seen.traceparent, request.traceparent);
    assert.equal(seen.signal.aborted, false);
  });
});

describe("heartbeats", () => {
  it("start min(250 ms, interval) after receipt, go on every interval while the handler runs, stop after", async () => {
    const request = makeRequest({ heartbeat_interval_ms: 20 });
    const wire = new FakeWire();
    const { reply } = run(
      async () => {
        await wire.next(request.heartbeat_subject);
        await wire.next(request.heartbeat_subject);
      },
      request,
      wire,
    );
    await reply;
    const sent = wire.json(request.heartbeat_subject);
    assert.equal(sent.length, 2, "the first at 20 ms (the interval is under 250 ms) and one more");
    for (const hb of sent) {
      assert.deepEqual(hb, {
        type: "io.jetbridge.v1.heartbeat",
        protocol: 1,
        task_id: request.task_id,
        attempt_token: request.attempt_token,
      });
    }
    assert.equal(wire.listeners(request.cancel_subject), 0, "cancel subscription closed");
  });

  it("are not sent automatically when the interval is 0, and explicit ones after the reply are dropped", async () => {
    let late!: Task;
    const { wire, request, reply } = run((task) => void (late = task));
    await reply;
    late.heartbeat({ progress: 1 });
    assert.equal(wire.json(request.heartbeat_subject).length, 0);
  });

  it("an invalid progress is a handler bug: RangeError, so the attempt is retried as handler_error", async () => {
    const { reply } = run((task) => task.heartbeat({ progress: 2 }));
    const body = (await reply).body as any;
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "handler_error");
  });
});

describe("abort signal", () => {
  it("aborts on a cancel message; a handler that gives up replies retry cancelled", async () => {
    const started = gate();
    let reason: unknown;
    const { wire, request, reply } = run(async (task) => {
      started.open();
      reason = await aborted(task.signal);
      throw reason;
    });
    await started.promise;
    wire.publish(request.cancel_subject, encodeJson({ ...cancelBody(request, "timeout"), message: "too slow" }));
    const body = (await reply).body as any;
    assert.ok(reason instanceof Cancelled);
    assert.equal(reason.reason, "timeout");
    assert.equal(reason.message, "too slow");
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "cancelled");
  });

  it("aborts when budget_ms runs out", async () => {
    let reason: unknown;
    const { reply } = run(async (task) => void (reason = await aborted(task.signal)), makeRequest({ budget_ms: 5 }));
    await reply;
    assert.ok(reason instanceof Cancelled);
    assert.equal(reason.reason, "timeout");
    assert.equal(reason.byDispatcher, false);
  });

  it("a handler that ignores the abort still replies with its result", async () => {
    const { reply } = run(async (task) => {
      await aborted(task.signal);
      return "done anyway";
    }, makeRequest({ budget_ms: 0 }));
    assert.equal(((await reply).body as any).result, "done anyway");
  });
});

describe("results and errors", () => {
  const cases: Array<[string, Handler, Record<string, unknown>]> = [
    ["undefined is a null result", () => undefined, { status: "ok", result_encoding: "json", result: null }],
    ["objects are JSON", () => ({ a: [1, "b"] }), { status: "ok", result_encoding: "json", result: { a: [1, "b"] } }],
    [
      "a Uint8Array is binary octet-stream",
      () => new Uint8Array([0, 1, 2]),
      { status: "ok", result_encoding: "base64", content_type: "application/octet-stream", result: "AAEC" },
    ],
    [
      "bytes() keeps its content type",
      () => bytes("hi", "text/plain"),
      { status: "ok", result_encoding: "base64", content_type: "text/plain", result: "aGk=" },
    ],
    [
      "Retry with details",
      () => {
        throw new Retry("busy", "later", { retryAfterMs: 10.2, details: { n: 1 } });
      },
      { status: "retry", error: { code: "busy", message: "later", details: { n: 1 } }, retry_after_ms: 11 },
    ],
    [
      "Terminate",
      async () => {
        throw new Terminate("bad", "never");
      },
      { status: "terminate", error: { code: "bad", message: "never" } },
    ],
    [
      "any other error is handler_error",
      () => {
        throw new TypeError("boom");
      },
      { status: "retry", error: { code: "handler_error", message: "boom" } },
    ],
    [
      "a thrown non-Error is handler_error too",
      () => Promise.reject("plain string"),
      { status: "retry", error: { code: "handler_error", message: "plain string" } },
    ],
  ];
  for (const [name, handler, want] of cases) {
    it(name, async () => {
      const { request, reply } = run(handler);
      const body = decodeJson(encodeReply(await reply, 1 << 20).data);
      assert.deepEqual(body, { type: "io.jetbridge.v1.task_reply", protocol: 1, attempt_token: request.attempt_token, ...want });
    });
  }

  it("a result that is not JSON becomes handler_error", async () => {
    const { reply } = run(() => ({ n: 10n }));
    const encoded = encodeReply(await reply, 1 << 20);
    const body = decodeJson(encoded.data);
    assert.equal(body.status, "retry");
    assert.equal(body.error.code, "handler_error");
    assert.equal(encoded.headers["Nats-Service-Error-Code"], "500");
  });

  it("a reply over max_payload becomes terminate result_too_large", async () => {
    const { request, reply } = run(() => new Uint8Array(3000));
    const encoded = encodeReply(await reply, 2048);
    const body = decodeJson(encoded.data);
    assert.equal(body.status, "terminate");
    assert.equal(body.error.code, "result_too_large");
    assert.equal(body.attempt_token, request.attempt_token);
    assert.equal(encoded.headers["Nats-Service-Error-Code"], "400");
  });

  it("the size check counts headers: a reply exactly at the limit fits, one byte more does not", async () => {
    const reply = await run(() => {
      throw new Retry("x", "y".repeat(100));
    }).reply;
    const exact = encodeReply(reply, 1 << 20);
    const size =
      exact.data.byteLength +
      Buffer.byteLength(
        `NATS/1.0${Object.entries(exact.headers)
          .map(([k, v]) => `\r\n${k}: ${v}`)
          .join("")}\r\n\r\n`,
      );
    assert.equal(decodeJson(encodeReply(reply, size).data).status, "retry");
    assert.equal(decodeJson(encodeReply(reply, size - 1).data).error.code, "result_too_large");
  });

  it("a binary payload reaches the handler as Bytes", async () => {
    const request = makeRequest({ payload_encoding: "base64", content_type: "image/png", payload: "iVBORw0KGgo=" });
    const attempt = new Attempt({
      wire: new FakeWire(),
      request,
      payload: new Bytes(new Uint8Array(Buffer.from("iVBORw0KGgo=", "base64")), "image/png"),
      handler: (task) => task.payload,
      logger: noop,
    });
    const body = (await attempt.run()).body as any;
    assert.equal(body.result, "iVBORw0KGgo=");
    assert.equal(body.content_type, "image/png");
  });
});

describe("concurrency limit", () => {
  it("runs at most `limit` handlers; the next starts when one finishes", async () => {
    const limiter = new Limiter(1);
    const wire = new FakeWire();
    const first = gate();
    const order: string[] = [];
    const a = run(
      async () => {
        order.push("a start");
        await first.promise;
        order.push("a end");
      },
      makeRequest(),
      wire,
      limiter,
    );
    const b = run(async () => void order.push("b start"), makeRequest(), wire, limiter);
    await Promise.resolve();
    assert.equal(limiter.active, 1);
    first.open();
    await Promise.all([a.reply, b.reply]);
    assert.deepEqual(order, ["a start", "a end", "b start"]);
    assert.equal(limiter.active, 0);
  });

  it("an attempt cancelled while waiting for a slot never runs and replies cancelled", async () => {
    const limiter = new Limiter(1);
    const wire = new FakeWire();
    const first = gate();
    const a = run(() => first.promise, makeRequest(), wire, limiter);
    let ran = false;
    const b = run(() => void (ran = true), makeRequest(), wire, limiter);
    wire.publish(b.request.cancel_subject, encodeJson(cancelBody(b.request, "operator")));
    const body = (await b.reply).body as any;
    assert.equal(body.error.code, "cancelled");
    first.open();
    await a.reply;
    assert.equal(ran, false);
    assert.equal(limiter.active, 0);
  });
});
