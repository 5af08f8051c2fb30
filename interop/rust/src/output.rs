//! What a handler returns: a result ([`Output`]) or a failure ([`HandlerError`]).

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::protocol::{ErrorBody, MAX_RETRY_AFTER_MS, Payload, Reply};

/// A handler's successful result. It has the same two forms as a task's payload:
/// `Output::Json(value)` or `Output::Bytes { data, content_type }`.
pub type Output = Payload;

impl Payload {
    /// Bytes with a content type, e.g. `Output::bytes(png, "image/png")`.
    pub fn bytes(data: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Self {
        Payload::Bytes {
            data: data.into(),
            content_type: content_type.into(),
        }
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload::Json(value)
    }
}

/// A failed attempt, as the handler wants the dispatcher to treat it (SPEC §4).
///
/// ```
/// use std::time::Duration;
/// use jetbridge::HandlerError;
///
/// let busy = HandlerError::retry("smtp_busy", "smtp busy").after(Duration::from_secs(30));
/// let bad = HandlerError::terminate("bad_address", "no such mailbox");
/// # let _ = (busy, bad);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerError {
    error: ErrorBody,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Retry { after: Option<Duration> },
    Terminate,
}

impl HandlerError {
    /// The attempt failed but the task may succeed later: the dispatcher retries it, within the
    /// queue's try limit, after the queue's backoff.
    pub fn retry(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody::new(code, message),
            kind: Kind::Retry { after: None },
        }
    }

    /// The task can never succeed: the dispatcher ends it without another try.
    pub fn terminate(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody::new(code, message),
            kind: Kind::Terminate,
        }
    }

    /// Retry after `delay` instead of the queue's backoff, e.g. when a rate limit says when.
    /// Has no effect on [`HandlerError::terminate`], which is never retried.
    pub fn after(mut self, delay: Duration) -> Self {
        if let Kind::Retry { after } = &mut self.kind {
            *after = Some(delay);
        }
        self
    }

    /// Attaches structured details, recorded with the error on the task.
    pub fn with_details(mut self, details: Value) -> Self {
        self.error.details = Some(details);
        self
    }

    /// The machine-readable code.
    pub fn code(&self) -> &str {
        &self.error.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.error.message
    }

    /// Whether the task may be tried again.
    pub fn is_retry(&self) -> bool {
        matches!(self.kind, Kind::Retry { .. })
    }

    /// The reply this error becomes.
    pub fn into_reply(self) -> Reply {
        match self.kind {
            Kind::Retry { after } => Reply::Retry {
                error: self.error,
                retry_after_ms: after.map(|d| {
                    u64::try_from(d.as_millis())
                        .unwrap_or(u64::MAX)
                        .min(MAX_RETRY_AFTER_MS)
                }),
            },
            Kind::Terminate => Reply::Terminate { error: self.error },
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.is_retry() {
            "retry"
        } else {
            "terminate"
        };
        write!(f, "{verb}: {}: {}", self.error.code, self.error.message)
    }
}

impl std::error::Error for HandlerError {}
