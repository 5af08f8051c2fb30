//! Decoding a `cancel` (SPEC §7).

use std::fmt;

use serde_json::Value;

use super::validate::{Object, as_integer, char_len_in, is_name, is_token};
use super::{PROTOCOL_VERSION, message_type};

/// Why an attempt was cancelled.
///
/// The first five are the reasons a dispatcher's cancel message carries (SPEC §7); the others are
/// raised by this crate itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// Someone cancelled the task.
    Operator,
    /// The task's deadline passed.
    Deadline,
    /// The attempt's deadline passed: the dispatcher said so, or `budget_ms` ran out here
    /// first (protocol 1.1 counts budget exhaustion as this cancel).
    Timeout,
    /// The dispatcher is shutting down and its grace period ran out.
    Shutdown,
    /// The dispatcher heard no heartbeat in time, or (protocol 1.1) this attempt fenced itself
    /// because the dispatcher stopped acknowledging its heartbeats.
    Lost,
    /// This service is draining and its drain timeout ran out.
    Draining,
}

impl CancelReason {
    /// The reason as the protocol spells it (`drain` for this crate's own).
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Operator => "operator",
            CancelReason::Deadline => "deadline",
            CancelReason::Timeout => "timeout",
            CancelReason::Shutdown => "shutdown",
            CancelReason::Lost => "lost",
            CancelReason::Draining => "drain",
        }
    }

    /// Whether the cancel came from the dispatcher, which has then stopped waiting for the reply.
    pub fn is_from_dispatcher(self) -> bool {
        !matches!(self, CancelReason::Draining)
    }

    fn from_wire(reason: &str) -> Option<Self> {
        Some(match reason {
            "operator" => CancelReason::Operator,
            "deadline" => CancelReason::Deadline,
            "timeout" => CancelReason::Timeout,
            "shutdown" => CancelReason::Shutdown,
            "lost" => CancelReason::Lost,
            _ => return None,
        })
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A valid cancel message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Cancel {
    pub task_id: String,
    pub attempt_token: String,
    pub reason: CancelReason,
    pub message: Option<String>,
}

/// Decodes a cancel message; `None` when it is not a valid one and must be ignored.
pub fn decode_cancel(body: &[u8]) -> Option<Cancel> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let str_member = |key: &str| obj.get(key).and_then(Value::as_str);
    let valid_header = str_member("type") == Some(message_type::CANCEL)
        && obj.get("protocol").and_then(as_integer) == Some(PROTOCOL_VERSION);
    let task_id = str_member("task_id").filter(|id| is_name(id))?;
    let attempt_token = str_member("attempt_token").filter(|token| is_token(token))?;
    let reason = str_member("reason").and_then(CancelReason::from_wire)?;
    let message = optional_message(&obj)?;
    valid_header.then(|| Cancel {
        task_id: task_id.to_owned(),
        attempt_token: attempt_token.to_owned(),
        reason,
        message,
    })
}

/// `Some(None)` when absent, `None` when present but invalid.
fn optional_message(obj: &Object) -> Option<Option<String>> {
    match obj.get("message") {
        None => Some(None),
        Some(Value::String(m)) if char_len_in(m, 0..=1024) => Some(Some(m.clone())),
        Some(_) => None,
    }
}
