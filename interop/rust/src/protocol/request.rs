//! Decoding a `task_request` and deciding what to do with it (SPEC §3.3).

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::reply::{ErrorBody, Reply};
use super::validate::{
    Invalid, Object, as_integer, char_len_in, integer_at_least, is_base64_text, is_name,
    is_subject, is_token, is_traceparent, required, string, string_matching, timestamp,
};
use super::{PROTOCOL_VERSION, error_code, message_type};

/// A task's payload, or a handler's result: the two forms SPEC §3.2 and §4 allow.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON value, carried as is (`json` encoding).
    Json(Value),
    /// Bytes with the content type the producer declared (`base64` encoding on the wire).
    Bytes {
        /// The bytes themselves, already decoded.
        data: Vec<u8>,
        /// For example `application/octet-stream` or `image/png`.
        content_type: String,
    },
}

/// A `task_request` that passed every check of SPEC §3.3: the handler may run it.
///
/// The fields mirror the body members of SPEC §3.2; timestamps are parsed, the payload decoded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskRequest {
    pub task_id: String,
    pub task_type: String,
    pub queue: String,
    pub attempt: u64,
    /// 0 means no limit.
    pub max_attempts: u64,
    pub created: SystemTime,
    pub deadline: Option<SystemTime>,
    pub attempt_token: String,
    pub attempt_deadline: SystemTime,
    pub budget_ms: u64,
    pub heartbeat_subject: String,
    /// 0 means heartbeats are optional.
    pub heartbeat_interval_ms: u64,
    /// Protocol 1.1 `heartbeat_ack`: send heartbeats as requests and fence the attempt when
    /// they go unacknowledged. Absent (a 1.0 dispatcher) means false.
    pub heartbeat_ack: bool,
    pub cancel_subject: String,
    pub content_type: String,
    pub payload: Payload,
    pub traceparent: Option<String>,
}

/// Why a request is refused before any handler runs; [`Rejection::reply`] is the answer to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    kind: RejectionKind,
    message: String,
    attempt_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RejectionKind {
    BadRequest,
    UnsupportedProtocol,
}

impl Rejection {
    fn bad_request(message: impl Into<String>, attempt_token: Option<String>) -> Self {
        Self {
            kind: RejectionKind::BadRequest,
            message: message.into(),
            attempt_token,
        }
    }

    /// The error code the reply carries: `bad_request` or `unsupported_protocol`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            RejectionKind::BadRequest => error_code::BAD_REQUEST,
            RejectionKind::UnsupportedProtocol => error_code::UNSUPPORTED_PROTOCOL,
        }
    }

    /// What was wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request's `attempt_token`, when it had a well-formed one, so the reply can echo it.
    pub fn attempt_token(&self) -> Option<&str> {
        self.attempt_token.as_deref()
    }

    /// The reply SPEC §3.3 prescribes for this rejection.
    pub fn reply(&self) -> Reply {
        let error = ErrorBody::new(self.code(), self.message.clone());
        match self.kind {
            RejectionKind::BadRequest => Reply::Terminate { error },
            RejectionKind::UnsupportedProtocol => Reply::UnsupportedProtocol { error },
        }
    }
}

/// Decides what to do with a request body, in the order SPEC §3.3 fixes.
///
/// `Ok` means: run the handler for `task_type` (whether one exists is the caller's business).
/// `Err` means: send [`Rejection::reply`] at once.
pub fn decode_request(body: &[u8]) -> Result<TaskRequest, Rejection> {
    // Step 1: a JSON object.
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| Rejection::bad_request(format!("body is not JSON: {err}"), None))?;
    let Value::Object(obj) = value else {
        return Err(Rejection::bad_request("body is not a JSON object", None));
    };
    let attempt_token = obj
        .get("attempt_token")
        .and_then(Value::as_str)
        .filter(|token| is_token(token))
        .map(str::to_owned);

    // Step 2: the version, before anything else, so that a v2 body is never called malformed.
    if let Err(found) = check_protocol(&obj) {
        return Err(Rejection {
            kind: RejectionKind::UnsupportedProtocol,
            message: format!("unsupported protocol version {found}"),
            attempt_token,
        });
    }

    // Step 3: the schema.
    parse_fields(obj).map_err(|message| Rejection::bad_request(message, attempt_token))
}

/// `Err` holds how the version looked, for the error message.
fn check_protocol(obj: &Object) -> Result<(), String> {
    match obj.get("protocol") {
        Some(v) if as_integer(v) == Some(PROTOCOL_VERSION) => Ok(()),
        Some(v) => Err(v.to_string()),
        None => Err("(missing)".to_owned()),
    }
}

fn parse_fields(mut obj: Object) -> Result<TaskRequest, Invalid> {
    // Taken out rather than cloned: it is the one member that may be large.
    let payload_value = obj.remove("payload").ok_or("payload is missing")?;
    let obj = &obj;
    if string(obj, "type")? != message_type::TASK_REQUEST {
        return Err(format!("type must be {}", message_type::TASK_REQUEST));
    }
    let content_type = string(obj, "content_type")?;
    if !char_len_in(content_type, 1..=255) {
        return Err("content_type must be 1 to 255 characters".to_owned());
    }
    let deadline = match required(obj, "deadline")? {
        Value::Null => None,
        _ => Some(timestamp(obj, "deadline")?),
    };
    let traceparent = match obj.get("traceparent") {
        None => None,
        Some(_) => Some(string_matching(
            obj,
            "traceparent",
            is_traceparent,
            "a W3C traceparent",
        )?),
    };
    let payload = decode_payload(
        string(obj, "payload_encoding")?,
        payload_value,
        content_type,
    )?;

    Ok(TaskRequest {
        task_id: string_matching(obj, "task_id", is_name, "a name")?.to_owned(),
        task_type: string_matching(obj, "task_type", is_name, "a name")?.to_owned(),
        queue: string_matching(obj, "queue", is_name, "a name")?.to_owned(),
        attempt: integer_at_least(obj, "attempt", 1)?,
        max_attempts: integer_at_least(obj, "max_attempts", 0)?,
        created: timestamp(obj, "created")?,
        deadline,
        attempt_token: string_matching(obj, "attempt_token", is_token, "an attempt token")?
            .to_owned(),
        attempt_deadline: timestamp(obj, "attempt_deadline")?,
        budget_ms: integer_at_least(obj, "budget_ms", 0)?,
        heartbeat_subject: string_matching(obj, "heartbeat_subject", is_subject, "a subject")?
            .to_owned(),
        heartbeat_interval_ms: integer_at_least(obj, "heartbeat_interval_ms", 0)?,
        heartbeat_ack: match obj.get("heartbeat_ack") {
            None => false,
            Some(Value::Bool(ack)) => *ack,
            Some(_) => return Err("heartbeat_ack must be a boolean".to_owned()),
        },
        cancel_subject: string_matching(obj, "cancel_subject", is_subject, "a subject")?.to_owned(),
        content_type: content_type.to_owned(),
        payload,
        traceparent: traceparent.map(str::to_owned),
    })
}

/// Turns `payload` into a [`Payload`] as `payload_encoding` says (SPEC §3.2).
fn decode_payload(encoding: &str, payload: Value, content_type: &str) -> Result<Payload, Invalid> {
    match encoding {
        "json" => Ok(Payload::Json(payload)),
        "base64" => {
            let text = payload
                .as_str()
                .filter(|text| is_base64_text(text))
                .ok_or("payload must be a base64 string")?;
            let data = STANDARD
                .decode(text)
                .map_err(|err| format!("payload is not valid base64: {err}"))?;
            Ok(Payload::Bytes {
                data,
                content_type: content_type.to_owned(),
            })
        }
        _ => Err("payload_encoding must be json or base64".to_owned()),
    }
}
