//! Encoding a `task_reply` and its NATS micro error headers (SPEC §4).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::request::Payload;
use super::validate::truncate_chars;
use super::{PROTOCOL_VERSION, SUPPORTED_PROTOCOLS, header, message_type};

/// The `error` member of a reply (`$defs/error` in the common schema).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBody {
    /// A short machine-readable code, e.g. `smtp_busy`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Anything else worth recording with the error.
    pub details: Option<Value>,
}

impl ErrorBody {
    /// An error without details.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    /// The JSON object, cut to the schema's limits so that a long message never turns a
    /// meaningful error into a protocol error at the dispatcher.
    fn to_json(&self) -> Value {
        let code = match truncate_chars(&self.code, 128) {
            "" => "error",
            code => code,
        };
        let mut error = Map::new();
        error.insert("code".into(), code.into());
        error.insert("message".into(), truncate_chars(&self.message, 8192).into());
        if let Some(details) = &self.details {
            error.insert("details".into(), details.clone());
        }
        Value::Object(error)
    }
}

/// What a handler answers for one attempt (SPEC §4).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The attempt succeeded with this result.
    Ok(Payload),
    /// The attempt failed; the task may be tried again, after `retry_after_ms` if given.
    Retry {
        error: ErrorBody,
        retry_after_ms: Option<u64>,
    },
    /// The task failed for good.
    Terminate { error: ErrorBody },
    /// The request spoke a protocol version this crate does not: a retry that lists ours.
    UnsupportedProtocol { error: ErrorBody },
}

/// A reply ready to publish: the body and the headers to send with it.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedReply {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// Encodes the reply, echoing `attempt_token` when known (SPEC §6).
    pub fn encode(&self, attempt_token: Option<&str>) -> EncodedReply {
        let (mut body, headers) = match self {
            Reply::Ok(result) => (ok_body(result), Vec::new()),
            Reply::Retry {
                error,
                retry_after_ms: None,
            } => (
                error_body("retry", error),
                error_headers(error, "500", None),
            ),
            Reply::Retry {
                error,
                retry_after_ms: Some(ms),
            } => {
                // Clamped to the schema's maximum, whoever built the reply.
                let ms = (*ms).min(super::MAX_RETRY_AFTER_MS);
                let mut body = error_body("retry", error);
                body.insert("retry_after_ms".into(), ms.into());
                (body, error_headers(error, "429", Some(ms)))
            }
            Reply::Terminate { error } => (
                error_body("terminate", error),
                error_headers(error, "400", None),
            ),
            Reply::UnsupportedProtocol { error } => {
                let mut body = error_body("retry", error);
                body.insert("supported_protocols".into(), json!(SUPPORTED_PROTOCOLS));
                (body, error_headers(error, "505", None))
            }
        };
        body.insert("type".into(), message_type::TASK_REPLY.into());
        body.insert("protocol".into(), PROTOCOL_VERSION.into());
        if let Some(token) = attempt_token {
            body.insert("attempt_token".into(), token.into());
        }
        EncodedReply {
            body: serde_json::to_vec(&body).expect("a JSON map always serializes"),
            headers,
        }
    }
}

fn ok_body(result: &Payload) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("status".into(), "ok".into());
    match result {
        Payload::Json(value) => {
            body.insert("result_encoding".into(), "json".into());
            body.insert("result".into(), value.clone());
        }
        Payload::Bytes { data, content_type } => {
            body.insert("result_encoding".into(), "base64".into());
            body.insert("content_type".into(), content_type.as_str().into());
            body.insert("result".into(), STANDARD.encode(data).into());
        }
    }
    body
}

fn error_body(status: &str, error: &ErrorBody) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("status".into(), status.into());
    body.insert("error".into(), error.to_json());
    body
}

fn error_headers(
    error: &ErrorBody,
    code: &str,
    retry_after_ms: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (
            header::SERVICE_ERROR,
            header_safe(truncate_chars(&error.message, 8192)),
        ),
        (header::SERVICE_ERROR_CODE, code.to_owned()),
    ];
    if let Some(ms) = retry_after_ms {
        headers.push((header::RETRY_AFTER_MS, ms.to_string()));
    }
    headers
}

/// A header value must stay on one line: a newline would end the NATS header block early.
fn header_safe(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_multiline_messages_stay_valid() {
        let error = ErrorBody::new("", format!("line one\r\nline two{}", "x".repeat(9000)));
        let encoded = Reply::Terminate { error }.encode(None);
        let body: Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(body["error"]["code"], "error");
        assert_eq!(
            body["error"]["message"].as_str().unwrap().chars().count(),
            8192
        );
        assert!(!encoded.headers[0].1.contains('\n'));
    }

    #[test]
    fn details_are_carried() {
        let mut error = ErrorBody::new("x", "y");
        error.details = Some(json!({"field": "to"}));
        let encoded = Reply::Terminate { error }.encode(None);
        let body: Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(body["error"]["details"], json!({"field": "to"}));
    }
}
