/**
 * Fixed values of protocol v1 (protocol/SPEC.md) and of this SDK.
 *
 * The regular expressions are copies of the patterns in protocol/schemas/common.schema.json and
 * task_request.schema.json; test/constants.test.ts fails if they drift apart, so edit the schema first.
 */

/** The one protocol version this SDK speaks (SPEC §1). */
export const PROTOCOL_VERSION = 1;

/** Versions advertised in an unsupported_protocol reply's `supported_protocols` (integers, per the schema). */
export const SUPPORTED_PROTOCOLS: readonly number[] = [PROTOCOL_VERSION];

/**
 * The service metadata `jetbridge.protocols`: protocol 1 plus the 1.1 handler rules (receipt heartbeat,
 * acknowledged heartbeats with self-fencing, budget as a `timeout` cancel), which keep `protocol` at 1 on the wire.
 */
export const PROTOCOLS_METADATA = "1,1.1";

/** The largest `retry_after_ms` the spec allows (7 days); larger requests are clamped to it. */
export const MAX_RETRY_AFTER_MS = 604_800_000;

/** The SDK's own version; kept equal to package.json by test/constants.test.ts. */
export const SDK_VERSION = "0.1.0";

/** `jetbridge.sdk` metadata value (SPEC §2). */
export const SDK_NAME = `node/${SDK_VERSION}`;

/** Message `type` values (SPEC §1). */
export const MessageType = {
  taskRequest: "io.jetbridge.v1.task_request",
  taskReply: "io.jetbridge.v1.task_reply",
  heartbeat: "io.jetbridge.v1.heartbeat",
  cancel: "io.jetbridge.v1.cancel",
} as const;

/** Header names used on replies (SPEC §4). */
export const Header = {
  serviceError: "Nats-Service-Error",
  serviceErrorCode: "Nats-Service-Error-Code",
  retryAfterMs: "Jetbridge-Retry-After-Ms",
} as const;

/** Defaults for service registration (SPEC §2, interop/README.md). */
export const DEFAULT_SUBJECT_PREFIX = "jetbridge.task";
export const DEFAULT_QUEUE_GROUP = "jetbridge";
export const DEFAULT_CONCURRENCY = 64;

/** Error codes the SDK itself puts in replies. */
export const ErrorCode = {
  badRequest: "bad_request",
  unsupportedProtocol: "unsupported_protocol",
  unknownTaskType: "unknown_task_type",
  handlerError: "handler_error",
  cancelled: "cancelled",
  resultTooLarge: "result_too_large",
} as const;

/** Schema patterns (common.schema.json `$defs`). */
export const NAME_PATTERN = /^[a-zA-Z0-9_:-]+$/u;
export const TOKEN_PATTERN = /^[A-Za-z0-9_-]{8,64}$/u;
export const TIMESTAMP_PATTERN =
  /^(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$/u;
export const SUBJECT_PATTERN = /^[^\s*>.]+(\.[^\s*>.]+)*$/u;
/** common.schema.json `base64`: canonical padded standard base64 (payloads and results). */
export const BASE64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$/u;
export const TRACEPARENT_PATTERN = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/u;

/** Length limits from the schemas, counted in Unicode code points as JSON Schema does. */
export const Limits = {
  nameMax: 256,
  contentTypeMax: 255,
  errorCodeMax: 128,
  errorMessageMax: 8192,
  /** heartbeat and cancel `message` */
  messageMax: 1024,
} as const;

/** Reasons a cancel message may carry (cancel.schema.json). */
export const CANCEL_REASONS = ["operator", "deadline", "timeout", "shutdown", "lost"] as const;
