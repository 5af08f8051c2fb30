//! The wire protocol, version 1, as `protocol/SPEC.md` defines it.
//!
//! This module is pure encoding and decoding: no NATS, no tasks. [`crate::Service`] uses it for
//! every attempt; it is public so that the shared vectors can be checked against it and so that
//! tools (proxies, taps) can reuse the exact rules.

mod cancel;
mod heartbeat;
mod reply;
mod request;
pub(crate) mod validate;

pub use cancel::{Cancel, CancelReason, decode_cancel};
pub use heartbeat::{HeartbeatError, encode_heartbeat};
pub use reply::{EncodedReply, ErrorBody, Reply};
pub use request::{Payload, Rejection, TaskRequest, decode_request};

/// The protocol version this crate speaks (SPEC §1).
pub const PROTOCOL_VERSION: u64 = 1;

/// The protocol versions this crate speaks, as the micro metadata `jetbridge.protocols` lists
/// them: 1.1 is 1 plus optional request members, so bodies still say `"protocol": 1`.
pub const PROTOCOLS_ADVERTISED: &str = "1,1.1";

/// The largest `retry_after_ms` (7 days); a longer delay is sent as this.
pub const MAX_RETRY_AFTER_MS: u64 = 604_800_000;

/// Every version this crate speaks; sent back in `supported_protocols` (SPEC §3.3).
pub const SUPPORTED_PROTOCOLS: &[u64] = &[PROTOCOL_VERSION];

/// `type` of each message (SPEC §1).
pub mod message_type {
    /// Dispatcher → handler.
    pub const TASK_REQUEST: &str = "io.jetbridge.v1.task_request";
    /// Handler → dispatcher, as the reply.
    pub const TASK_REPLY: &str = "io.jetbridge.v1.task_reply";
    /// Handler → dispatcher, on `heartbeat_subject`.
    pub const HEARTBEAT: &str = "io.jetbridge.v1.heartbeat";
    /// Dispatcher → handler, on `cancel_subject`.
    pub const CANCEL: &str = "io.jetbridge.v1.cancel";
}

/// Reply headers a handler sets (SPEC §4).
pub mod header {
    /// The NATS micro error text, so that `nats micro` tools see the failure.
    pub const SERVICE_ERROR: &str = "Nats-Service-Error";
    /// The NATS micro error code: 500, 429, 400 or 505.
    pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
    /// Mirrors `retry_after_ms` for readers that only look at headers.
    pub const RETRY_AFTER_MS: &str = "Jetbridge-Retry-After-Ms";
}

/// Error codes this crate puts in replies on its own (handlers choose their own codes). The
/// first three are fixed by SPEC §3.3, `result_too_large` by §8; the others are this crate's.
pub mod error_code {
    /// The request is not a valid `task_request` (SPEC §3.3 steps 1 and 3).
    pub const BAD_REQUEST: &str = "bad_request";
    /// The request speaks another protocol version (SPEC §3.3 step 2).
    pub const UNSUPPORTED_PROTOCOL: &str = "unsupported_protocol";
    /// No handler is registered for the request's `task_type` (SPEC §3.3).
    pub const UNKNOWN_TASK_TYPE: &str = "unknown_task_type";
    /// The reply would not fit the server's `max_payload` (SPEC §8).
    pub const RESULT_TOO_LARGE: &str = "result_too_large";
    /// The handler panicked: retried, since the next attempt may well succeed.
    pub const HANDLER_ERROR: &str = "handler_error";
    /// [`Task::json`](crate::Task::json) could not decode the payload into the handler's type.
    pub const BAD_PAYLOAD: &str = "bad_payload";
    /// The attempt was cancelled (or its budget ran out) before a worker was free to run it.
    pub const CANCELLED: &str = "cancelled";
}
