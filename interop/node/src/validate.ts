/**
 * Hand-written checks equivalent to protocol/schemas/task_request.schema.json and cancel.schema.json.
 *
 * Why not a JSON Schema library: the two schemas are small and fixed for v1, and a validator would be the
 * package's largest dependency. The vectors (test/vectors.test.ts) and the pattern test keep these checks
 * honest. Each check returns the first problem as text, or null when the message is valid.
 */
import {
  BASE64_PATTERN,
  CANCEL_REASONS,
  Limits,
  MessageType,
  NAME_PATTERN,
  PROTOCOL_VERSION,
  SUBJECT_PATTERN,
  TIMESTAMP_PATTERN,
  TOKEN_PATTERN,
  TRACEPARENT_PATTERN,
} from "./constants.js";

type Obj = Record<string, unknown>;
type Check = (value: unknown) => string | null;

/** JSON Schema counts string length in code points, not UTF-16 units. */
function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function string(pattern: RegExp | null, min = 0, max = Infinity): Check {
  return (v) => {
    if (typeof v !== "string") return "must be a string";
    const n = codePoints(v);
    if (n < min) return `must be at least ${min} characters`;
    if (n > max) return `must be at most ${max} characters`;
    if (pattern && !pattern.test(v)) return `must match ${pattern.source}`;
    return null;
  };
}

function integer(min: number): Check {
  return (v) => {
    // JSON.parse turns 1.0 into 1, so Number.isInteger matches JSON Schema's "integer".
    if (typeof v !== "number" || !Number.isInteger(v)) return "must be an integer";
    if (v < min) return `must be at least ${min}`;
    return null;
  };
}

function constant(expected: unknown): Check {
  return (v) => (v === expected ? null : `must be ${JSON.stringify(expected)}`);
}

function oneOf(values: readonly unknown[]): Check {
  return (v) => (values.includes(v) ? null : `must be one of ${values.map((x) => JSON.stringify(x)).join(", ")}`);
}

const name = string(NAME_PATTERN, 1, Limits.nameMax);
const token = string(TOKEN_PATTERN);
const timestamp = string(TIMESTAMP_PATTERN);
const subject = string(SUBJECT_PATTERN, 1);
const any: Check = () => null;

/** Checks every listed member: required ones must be present, optional ones are checked when present. */
function checkMembers(body: Obj, required: Record<string, Check>, optional: Record<string, Check> = {}): string | null {
  for (const [key, check] of Object.entries(required)) {
    if (!Object.hasOwn(body, key)) return `${key}: is required`;
    const problem = check(body[key]);
    if (problem) return `${key}: ${problem}`;
  }
  for (const [key, check] of Object.entries(optional)) {
    if (!Object.hasOwn(body, key)) continue;
    const problem = check(body[key]);
    if (problem) return `${key}: ${problem}`;
  }
  return null;
}

const taskRequestMembers: Record<string, Check> = {
  type: constant(MessageType.taskRequest),
  protocol: constant(PROTOCOL_VERSION),
  task_id: name,
  task_type: name,
  queue: name,
  attempt: integer(1),
  max_attempts: integer(0),
  created: timestamp,
  deadline: (v) => (v === null ? null : timestamp(v) && "must be a timestamp or null"),
  attempt_token: token,
  attempt_deadline: timestamp,
  budget_ms: integer(0),
  heartbeat_subject: subject,
  heartbeat_interval_ms: integer(0),
  cancel_subject: subject,
  payload_encoding: oneOf(["json", "base64"]),
  content_type: string(null, 1, Limits.contentTypeMax),
  payload: any,
};

/** The first way `body` breaks task_request.schema.json, or null. */
export function taskRequestProblem(body: Obj): string | null {
  const problem = checkMembers(body, taskRequestMembers, {
    traceparent: string(TRACEPARENT_PATTERN),
    heartbeat_ack: (v) => (typeof v === "boolean" ? null : "must be a boolean"),
  });
  if (problem) return problem;
  // The schema's if/then: base64 payloads are base64 text.
  if (body.payload_encoding === "base64") {
    const p = body.payload;
    if (typeof p !== "string" || !BASE64_PATTERN.test(p)) return "payload: must be base64 text";
  }
  return null;
}

/** The first way `body` breaks cancel.schema.json, or null. */
export function cancelProblem(body: Obj): string | null {
  return checkMembers(
    body,
    {
      type: constant(MessageType.cancel),
      protocol: constant(PROTOCOL_VERSION),
      task_id: name,
      attempt_token: token,
      reason: oneOf(CANCEL_REASONS),
    },
    { message: string(null, 0, Limits.messageMax) },
  );
}

/** True for a JSON object (not an array, not null). */
export function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
