/**
 * Every case of the four shared vector files (protocol/vectors), read as each file's description says:
 * request decisions and payloads, canonical reply and heartbeat encodings (compared as JSON, with their
 * headers), and cancel validity. Canonical encodings are checked twice: from the pure encoders, and from a
 * handler run through a real Attempt over an in-memory wire.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Attempt } from "../src/attempt.js";
import { Bytes, bytes, encodeBase64 } from "../src/bytes.js";
import { parseCancel } from "../src/cancel.js";
import { Cancelled, Retry, Terminate } from "../src/errors.js";
import { heartbeatBody } from "../src/heartbeat.js";
import { encodeReply, replyForError, replyForResult, type Reply } from "../src/reply.js";
import { decodeRequest, type TaskRequest } from "../src/request.js";
import { isObject, taskRequestProblem } from "../src/validate.js";
import type { Handler, HeartbeatUpdate } from "../src/types.js";
import { FakeWire, type Published } from "./helpers/fake-wire.js";
import { caseBytes, loadVectors, type VectorCase } from "./helpers/vectors.js";
import { decodeJson, encodeJson } from "./helpers/requests.js";

const requests = loadVectors("task_request");
const replies = loadVectors("task_reply");
const heartbeats = loadVectors("heartbeat");
const cancels = loadVectors("cancel");

/** A valid request from the vectors, carrying the token the other files' canonical cases use. */
const baseRequest = requests.cases.find((c) => c.name === "json-object-payload")!.body as unknown as TaskRequest;
assert.equal(baseRequest.attempt_token, replies.attempt_token);

const noop = { warn() {}, error() {} };

function attemptFor(handler: Handler, wire = new FakeWire()): { attempt: Attempt; wire: FakeWire } {
  const attempt = new Attempt({ wire, request: baseRequest, payload: null, handler, logger: noop });
  return { attempt, wire };
}

describe("task_request vectors", () => {
  for (const c of requests.cases) {
    it(`${c.name}: ${c.description}`, () => {
      const d = decodeRequest(caseBytes(c));
      if (c.expect.decision === "handle") {
        assert.equal(d.decision, "handle");
        if (d.decision !== "handle") return;
        // Protocol 1.1: whether heartbeats go as requests (absent means false).
        if (c.expect.heartbeat_ack !== undefined) assert.equal(d.request.heartbeat_ack === true, c.expect.heartbeat_ack);
        const p = c.expect.payload;
        if (p.kind === "json") {
          assert.ok(!(d.payload instanceof Bytes));
          assert.deepEqual(d.payload, p.value);
        } else {
          assert.ok(d.payload instanceof Bytes);
          assert.equal(d.payload.toBase64(), p.base64);
          assert.equal(d.payload.contentType, p.content_type);
        }
        return;
      }
      assert.equal(d.decision, "reject");
      if (d.decision !== "reject") return;
      const want = c.expect.reply;
      const body = d.reply.body as any;
      assert.equal(body.type, "io.jetbridge.v1.task_reply");
      assert.equal(body.protocol, 1);
      assert.equal(body.status, want.status);
      assert.equal(body.error.code, want.error_code);
      assert.equal(typeof body.error.message, "string");
      assert.equal(d.reply.headers["Nats-Service-Error-Code"], String(want.service_error_code));
      assert.equal(d.reply.headers["Nats-Service-Error"], body.error.message);
      if (want.supported_protocols) assert.deepEqual(body.supported_protocols, want.supported_protocols);
      else assert.equal(body.supported_protocols, undefined);
      // The token is echoed only when the request carried a well-formed one (SPEC §4, §6); the vector says which.
      if (want.attempt_token !== undefined) assert.equal(body.attempt_token, want.attempt_token ?? undefined);
      const sent = c.body?.attempt_token;
      const wellFormed = typeof sent === "string" && /^[A-Za-z0-9_-]{8,64}$/.test(sent);
      assert.equal(body.attempt_token, wellFormed ? sent : undefined);
    });
  }

  it("agrees with every case's schema_valid", () => {
    for (const c of requests.cases.filter((c) => c.schema_valid !== undefined)) {
      const valid = isObject(c.body) && taskRequestProblem(c.body) === null;
      assert.equal(valid, c.schema_valid, c.name);
    }
  });
});

/** Asks the library for a case's intent the way a handler would: by returning or throwing. */
function outcomeFor(intent: Record<string, any>): { value?: unknown; error?: unknown } {
  if ("ok" in intent) return { value: intent.ok };
  if ("ok_bytes" in intent) {
    const b = Buffer.from(intent.ok_bytes.base64, "base64");
    return { value: bytes(new Uint8Array(b), intent.ok_bytes.content_type) };
  }
  if ("retry" in intent) {
    const { code, message, retry_after_ms } = intent.retry;
    return { error: new Retry(code, message, retry_after_ms === undefined ? {} : { retryAfterMs: retry_after_ms }) };
  }
  if ("terminate" in intent) return { error: new Terminate(intent.terminate.code, intent.terminate.message) };
  throw new Error(`unknown intent ${JSON.stringify(intent)}`);
}

function assertCanonical(reply: Reply, c: VectorCase): void {
  const encoded = encodeReply(reply, 1024 * 1024);
  assert.deepEqual(decodeJson(encoded.data), c.body);
  assert.deepEqual(encoded.headers, c.headers);
}

describe("task_reply vectors with an intent", () => {
  const canonical = replies.cases.filter((c) => c.intent);
  it("has canonical cases", () => assert.ok(canonical.length >= 7));
  for (const c of canonical) {
    it(`${c.name}: encoders produce the canonical body and headers`, () => {
      const { value, error } = outcomeFor(c.intent!);
      const token = replies.attempt_token;
      assertCanonical(error === undefined ? replyForResult(token, value) : replyForError(token, error), c);
    });
    it(`${c.name}: a handler produces the canonical body and headers`, async () => {
      const { value, error } = outcomeFor(c.intent!);
      const { attempt } = attemptFor(async () => {
        if (error !== undefined) throw error;
        return value;
      });
      assertCanonical(await attempt.run(), c);
    });
  }
});

describe("heartbeat vectors", () => {
  const token = heartbeats.attempt_token;
  for (const c of heartbeats.cases.filter((c) => c.intent)) {
    it(`${c.name}: heartbeatBody is canonical`, () => {
      assert.deepEqual(heartbeatBody(baseRequest.task_id, token, c.intent as HeartbeatUpdate), c.body);
    });
    it(`${c.name}: task.heartbeat publishes the canonical body`, async () => {
      // The receipt heartbeat goes first; the explicit one is what the handler's call publishes.
      const wire = new FakeWire();
      let hb!: Published;
      const { attempt } = attemptFor((task) => {
        task.heartbeat(c.intent as HeartbeatUpdate);
        hb = wire.published.at(-1)!;
      }, wire);
      await attempt.run();
      assert.equal(hb.subject, baseRequest.heartbeat_subject);
      assert.deepEqual(decodeJson(hb.data), c.body);
      assert.equal(hb.headers, undefined);
    });
  }
  it("the SDK refuses to send the invalid progress values of the vectors", () => {
    for (const c of heartbeats.cases.filter((c) => c.expect.valid === false && c.body && "progress" in c.body)) {
      assert.throws(() => heartbeatBody(baseRequest.task_id, token, { progress: c.body!.progress as number }), RangeError);
    }
  });
  it("the SDK cuts over-long messages to the schema's limit", () => {
    const c = heartbeats.cases.find((c) => c.name === "long-message")!;
    const body = heartbeatBody(baseRequest.task_id, token, { message: c.body!.message as string });
    assert.equal((body.message as string).length, 1024);
  });
});

describe("cancel vectors", () => {
  for (const c of cancels.cases) {
    it(`${c.name}: ${c.description}`, async () => {
      const parsed = parseCancel(caseBytes(c));
      assert.equal(parsed.valid, c.expect.valid);
      if (parsed.valid) assert.equal(parsed.reason, c.expect.reason);

      // And through an attempt: valid cancels abort the signal with their reason, invalid ones are ignored.
      let seen: unknown;
      const { attempt, wire } = attemptFor(async (task) => {
        wire.publish(baseRequest.cancel_subject, caseBytes(c));
        seen = task.signal.aborted ? task.signal.reason : undefined;
        return null;
      });
      await attempt.run();
      if (c.expect.valid) {
        assert.ok(seen instanceof Cancelled);
        assert.equal(seen.reason, c.expect.reason);
        assert.ok(seen.byDispatcher);
      } else {
        assert.equal(seen, undefined);
      }
    });
  }
  it("a valid cancel for another attempt's token is ignored", async () => {
    const c = cancels.cases.find((c) => c.expect.valid)!;
    const other = { ...c.body, attempt_token: "zzzzzzzzzzzz" };
    let aborted: boolean | undefined;
    const { attempt, wire } = attemptFor(async (task) => {
      wire.publish(baseRequest.cancel_subject, encodeJson(other));
      aborted = task.signal.aborted;
    });
    await attempt.run();
    assert.equal(aborted, false);
  });
});

// Keeps the base64 helper honest on the vectors' binary payload.
it("base64 helpers round-trip the binary vector", () => {
  const c = requests.cases.find((c) => c.name === "binary-payload")!;
  const d = decodeRequest(caseBytes(c));
  assert.equal(d.decision, "handle");
  if (d.decision === "handle") assert.equal(encodeBase64((d.payload as Bytes).bytes), c.body!.payload);
});
