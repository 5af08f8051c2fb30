/**
 * Decodes a task_request and makes the decision of SPEC §3.3, steps 1 to 3: either the request is valid and
 * the attempt may run, or the SDK must reply at once with the given reply.
 */
import { Bytes, decodeBase64 } from "./bytes.js";
import { ErrorCode, PROTOCOL_VERSION, TOKEN_PATTERN } from "./constants.js";
import { terminateReply, unsupportedProtocolReply, type Reply } from "./reply.js";
import type { JsonValue } from "./types.js";
import { isObject, taskRequestProblem } from "./validate.js";

/** A schema-valid task_request body (SPEC §3.2), typed. */
export interface TaskRequest {
  type: string;
  protocol: number;
  task_id: string;
  task_type: string;
  queue: string;
  attempt: number;
  max_attempts: number;
  created: string;
  deadline: string | null;
  attempt_token: string;
  attempt_deadline: string;
  budget_ms: number;
  heartbeat_subject: string;
  heartbeat_interval_ms: number;
  cancel_subject: string;
  payload_encoding: "json" | "base64";
  content_type: string;
  payload: unknown;
  traceparent?: string;
  /** Protocol 1.1: the dispatcher acknowledges heartbeats sent as requests (absent from 1.0 dispatchers). */
  heartbeat_ack?: boolean;
}

export type Decision =
  | { decision: "handle"; request: TaskRequest; payload: JsonValue | Bytes }
  | { decision: "reject"; reply: Reply };

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Parses the body as JSON; undefined when it is not UTF-8 JSON at all. */
function parseJson(data: Uint8Array): { value: unknown } | undefined {
  try {
    return { value: JSON.parse(utf8.decode(data)) };
  } catch {
    return undefined;
  }
}

/**
 * The token to echo in a rejection, when the body carries a well-formed one: the dispatcher drops replies
 * whose token does not match (SPEC §6), so a rejection is only useful with the right one.
 */
function tokenOf(body: Record<string, unknown>): string | undefined {
  const t = body.attempt_token;
  return typeof t === "string" && TOKEN_PATTERN.test(t) ? t : undefined;
}

/** The payload as the handler sees it (SPEC §3.2 `payload_encoding`). */
export function interpretPayload(request: TaskRequest): JsonValue | Bytes {
  if (request.payload_encoding === "base64") {
    return new Bytes(decodeBase64(request.payload as string), request.content_type);
  }
  return request.payload as JsonValue;
}

/** SPEC §3.3, in its order. Unknown task types (the last rule) are the service's call, as only it knows them. */
export function decodeRequest(data: Uint8Array): Decision {
  const parsed = parseJson(data);
  if (!parsed || !isObject(parsed.value)) {
    return reject(terminateReply(undefined, { code: ErrorCode.badRequest, message: "request body is not a JSON object" }));
  }
  const body = parsed.value;
  const token = tokenOf(body);
  if (body.protocol !== PROTOCOL_VERSION) {
    const shown = Object.hasOwn(body, "protocol") ? JSON.stringify(body.protocol) : "(missing)";
    return reject(unsupportedProtocolReply(token, `unsupported protocol version ${shown}`));
  }
  const problem = taskRequestProblem(body);
  if (problem) {
    return reject(terminateReply(token, { code: ErrorCode.badRequest, message: `bad request: ${problem}` }));
  }
  const request = body as unknown as TaskRequest;
  return { decision: "handle", request, payload: interpretPayload(request) };
}

function reject(reply: Reply): Decision {
  return { decision: "reject", reply };
}

/** SPEC §3.3's last rule: a type this service has no handler for is terminated. */
export function unknownTaskTypeReply(request: TaskRequest): Reply {
  return terminateReply(request.attempt_token, {
    code: ErrorCode.unknownTaskType,
    message: `no handler for task type ${request.task_type}`,
  });
}
