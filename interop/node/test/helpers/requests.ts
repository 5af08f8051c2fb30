/** Builds task_request bodies for tests: valid, with a fresh token and subjects unless overridden. */
import { randomBytes } from "node:crypto";
import type { TaskRequest } from "../../src/request.js";

export function freshToken(): string {
  return randomBytes(12).toString("base64url");
}

export function makeRequest(overrides: Partial<TaskRequest> & Record<string, unknown> = {}): TaskRequest {
  const token = (overrides.attempt_token as string | undefined) ?? freshToken();
  const now = Date.now();
  return {
    type: "io.jetbridge.v1.task_request",
    protocol: 1,
    task_id: `t${freshToken()}`,
    task_type: "test:echo",
    queue: "TEST",
    attempt: 1,
    max_attempts: 3,
    created: new Date(now).toISOString(),
    deadline: null,
    attempt_token: token,
    attempt_deadline: new Date(now + 60_000).toISOString(),
    budget_ms: 60_000,
    heartbeat_subject: `jetbridge.hb.test.${token}`,
    heartbeat_interval_ms: 0,
    cancel_subject: `jetbridge.cancel.${token}`,
    payload_encoding: "json",
    content_type: "application/json",
    payload: { hello: "world" },
    ...overrides,
  };
}

/** The routing headers a dispatcher mirrors (SPEC §3.1). */
export function requestHeaders(r: TaskRequest): Record<string, string> {
  return {
    "Jetbridge-Protocol": "1",
    "Jetbridge-Task-Id": r.task_id,
    "Jetbridge-Task-Type": r.task_type,
    "Jetbridge-Queue": r.queue,
    "Jetbridge-Attempt": String(r.attempt),
    "Jetbridge-Attempt-Deadline": r.attempt_deadline,
    "Content-Type": "application/json",
  };
}

export function cancelBody(r: TaskRequest, reason = "operator", token = r.attempt_token): Record<string, unknown> {
  return { type: "io.jetbridge.v1.cancel", protocol: 1, task_id: r.task_id, attempt_token: token, reason };
}

export const encodeJson = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
export const decodeJson = (d: Uint8Array): any => JSON.parse(new TextDecoder().decode(d));
