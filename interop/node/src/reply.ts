/**
 * Builds task_reply bodies and their headers (SPEC §4), and turns a handler's return value or thrown error
 * into one. Pure functions: the canonical reply vectors are checked against exactly this code.
 */
import { Bytes, OCTET_STREAM } from "./bytes.js";
import { ErrorCode, Header, Limits, MessageType, PROTOCOL_VERSION, SUPPORTED_PROTOCOLS } from "./constants.js";
import { Cancelled, Retry, Terminate } from "./errors.js";

/** A reply before serialisation: the JSON body and the NATS headers to send with it. */
export interface Reply {
  body: Record<string, unknown>;
  headers: Record<string, string>;
}

/** A reply ready for the wire. */
export interface EncodedReply {
  data: Uint8Array;
  headers: Record<string, string>;
}

interface ErrorFields {
  code: string;
  message: string;
  details?: unknown;
}

function envelope(status: string, token: string | undefined): Record<string, unknown> {
  const body: Record<string, unknown> = { type: MessageType.taskReply, protocol: PROTOCOL_VERSION, status };
  if (token !== undefined) body.attempt_token = token;
  return body;
}

/** Cuts `s` to `max` code points, so the reply stays schema-valid whatever a handler put in an error. */
function clip(s: string, max: number): string {
  const points = [...s];
  return points.length <= max ? s : points.slice(0, max).join("");
}

function errorObject({ code, message, details }: ErrorFields): Record<string, unknown> {
  const error: Record<string, unknown> = {
    code: clip(code, Limits.errorCodeMax) || ErrorCode.handlerError,
    message: clip(message, Limits.errorMessageMax),
  };
  if (details !== undefined) error.details = details;
  return error;
}

/** NATS header values cannot hold CR or LF, and nats.js trims them; do the same up front so tests see the truth. */
function headerValue(s: string): string {
  return s.replace(/[\r\n]+/g, " ").trim();
}

/** The micro error headers that let `nats micro stats` count a failed attempt. */
function errorHeaders(message: string, serviceCode: number): Record<string, string> {
  return { [Header.serviceError]: headerValue(message), [Header.serviceErrorCode]: String(serviceCode) };
}

/** Success with a JSON result (`undefined` becomes null). */
export function okReply(token: string | undefined, result: unknown): Reply {
  return {
    body: { ...envelope("ok", token), result_encoding: "json", result: result === undefined ? null : result },
    headers: {},
  };
}

/** Success with a binary result. */
export function okBytesReply(token: string | undefined, data: Bytes): Reply {
  return {
    body: {
      ...envelope("ok", token),
      result_encoding: "base64",
      content_type: data.contentType,
      result: data.toBase64(),
    },
    headers: {},
  };
}

/** A retryable failure: service code 500, or 429 with `Jetbridge-Retry-After-Ms` when a delay is given. */
export function retryReply(token: string | undefined, error: ErrorFields, retryAfterMs?: number): Reply {
  const body = { ...envelope("retry", token), error: errorObject(error) };
  if (retryAfterMs === undefined) return { body, headers: errorHeaders(error.message, 500) };
  return {
    body: { ...body, retry_after_ms: retryAfterMs },
    headers: { ...errorHeaders(error.message, 429), [Header.retryAfterMs]: String(retryAfterMs) },
  };
}

/** A final failure: service code 400. */
export function terminateReply(token: string | undefined, error: ErrorFields): Reply {
  return { body: { ...envelope("terminate", token), error: errorObject(error) }, headers: errorHeaders(error.message, 400) };
}

/** SPEC §3.3 step 2: retryable, because another replica may speak the version. */
export function unsupportedProtocolReply(token: string | undefined, message: string): Reply {
  return {
    body: {
      ...envelope("retry", token),
      error: errorObject({ code: ErrorCode.unsupportedProtocol, message }),
      supported_protocols: [...SUPPORTED_PROTOCOLS],
    },
    headers: errorHeaders(message, 505),
  };
}

/** The reply for what a handler returned. */
export function replyForResult(token: string | undefined, result: unknown): Reply {
  if (result instanceof Bytes) return okBytesReply(token, result);
  if (result instanceof Uint8Array) return okBytesReply(token, new Bytes(result, OCTET_STREAM));
  return okReply(token, result);
}

/**
 * The reply for what a handler threw. Retry and Terminate say what they want; anything thrown after the
 * attempt was aborted is the handler giving up on a cancel, so it is reported as `cancelled`; the rest is a bug
 * or an outage in the handler and is retried as `handler_error`.
 */
export function replyForError(token: string | undefined, err: unknown, signal?: AbortSignal): Reply {
  if (err instanceof Retry) return retryReply(token, err, err.retryAfterMs);
  if (err instanceof Terminate) return terminateReply(token, err);
  if (signal?.aborted) {
    const message = signal.reason instanceof Cancelled ? signal.reason.message : "attempt cancelled";
    return retryReply(token, { code: ErrorCode.cancelled, message });
  }
  return retryReply(token, { code: ErrorCode.handlerError, message: describe(err) });
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  try {
    return String(err);
  } catch {
    return "handler threw a value that cannot be shown";
  }
}

/** Bytes the NATS header block takes on the wire ("NATS/1.0", one CRLF-led line per header, CRLF CRLF). */
export function headerBlockSize(headers: Record<string, string>): number {
  const entries = Object.entries(headers);
  if (entries.length === 0) return 0;
  let text = "NATS/1.0";
  for (const [k, v] of entries) text += `\r\n${k}: ${v}`;
  return Buffer.byteLength(`${text}\r\n\r\n`);
}

/**
 * Serialises a reply for a server whose limit is `maxPayload` bytes (headers included). A result that cannot be
 * serialised becomes a `handler_error` retry; a reply that would not fit becomes `result_too_large` (SPEC §8).
 */
export function encodeReply(reply: Reply, maxPayload: number): EncodedReply {
  const token = typeof reply.body.attempt_token === "string" ? reply.body.attempt_token : undefined;
  let data: Uint8Array;
  try {
    data = new TextEncoder().encode(JSON.stringify(reply.body));
  } catch (err) {
    // Only a handler's result can break JSON.stringify (a BigInt, a cycle); the SDK's own replies cannot.
    reply = retryReply(token, { code: ErrorCode.handlerError, message: `result is not JSON: ${describe(err)}` });
    data = new TextEncoder().encode(JSON.stringify(reply.body));
  }
  const size = data.byteLength + headerBlockSize(reply.headers);
  if (size <= maxPayload) return { data, headers: reply.headers };
  const tooLarge = terminateReply(token, {
    code: ErrorCode.resultTooLarge,
    message: `reply of ${size} bytes exceeds the server's max_payload of ${maxPayload} bytes`,
  });
  return { data: new TextEncoder().encode(JSON.stringify(tooLarge.body)), headers: tooLarge.headers };
}
