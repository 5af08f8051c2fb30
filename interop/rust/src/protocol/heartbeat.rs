//! Encoding a `heartbeat` (SPEC §5).

use std::fmt;

use serde_json::{Map, Value};

use super::validate::truncate_chars;
use super::{PROTOCOL_VERSION, message_type};

/// The most characters of `message` a heartbeat carries (`heartbeat.schema.json`).
const MAX_MESSAGE_CHARS: usize = 1024;

/// A heartbeat that cannot be sent as asked.
#[derive(Debug, Clone, PartialEq)]
pub enum HeartbeatError {
    /// `progress` must be a fraction from 0 to 1.
    InvalidProgress(f64),
}

impl fmt::Display for HeartbeatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeartbeatError::InvalidProgress(p) => {
                write!(f, "heartbeat progress {p} is not a fraction from 0 to 1")
            }
        }
    }
}

impl std::error::Error for HeartbeatError {}

/// Encodes a heartbeat for one attempt.
///
/// An out-of-range `progress` is refused rather than clamped, since it points at a bug in the
/// caller; a `message` over the schema's limit is cut, since it is only for people.
pub fn encode_heartbeat(
    task_id: &str,
    attempt_token: &str,
    progress: Option<f64>,
    message: Option<&str>,
) -> Result<Vec<u8>, HeartbeatError> {
    let mut body = Map::new();
    body.insert("type".into(), message_type::HEARTBEAT.into());
    body.insert("protocol".into(), PROTOCOL_VERSION.into());
    body.insert("task_id".into(), task_id.into());
    body.insert("attempt_token".into(), attempt_token.into());
    if let Some(progress) = progress {
        if !(0.0..=1.0).contains(&progress) {
            return Err(HeartbeatError::InvalidProgress(progress));
        }
        body.insert("progress".into(), progress.into());
    }
    if let Some(message) = message {
        body.insert(
            "message".into(),
            truncate_chars(message, MAX_MESSAGE_CHARS).into(),
        );
    }
    Ok(serde_json::to_vec(&Value::Object(body)).expect("a JSON map always serializes"))
}
