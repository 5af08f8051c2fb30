/**
 * jetbridge: write Jetbridge task handlers in Node.js. The protocol is protocol/SPEC.md; this package is its
 * handler side over nats.js.
 */
export { Bytes, bytes } from "./bytes.js";
export { Cancelled, Retry, Terminate, type FailureOptions, type RetryOptions } from "./errors.js";
export { JetbridgeService, createService } from "./service.js";
export { serve, type ServeOptions, type Serving } from "./serve.js";
export { connectNats, RECONNECT_OPTIONS } from "./connect.js";
export { logging, recover, timeout, type AttemptLog, type Middleware, type Next } from "./middleware.js";
export { PROTOCOL_VERSION, SDK_VERSION } from "./constants.js";
export type {
  AbortCause,
  CancelReason,
  HandleOptions,
  Handler,
  HeartbeatUpdate,
  JsonValue,
  Logger,
  ServiceOptions,
  Task,
} from "./types.js";
