//! The crate's error type, for the few operations that can fail outside a handler.

use std::fmt;

use crate::protocol::HeartbeatError;

/// Why starting a service, draining it or sending a heartbeat failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The service's configuration cannot work, e.g. a task type that is not a subject token.
    Config(String),
    /// NATS refused or failed an operation.
    Nats(async_nats::Error),
    /// A heartbeat was asked for with an invalid progress.
    Heartbeat(HeartbeatError),
    /// The dispatcher no longer runs this attempt: a heartbeat found no responder or none was
    /// acknowledged within the heartbeat timeout (protocol 1.1). The attempt is cancelled with
    /// reason `Lost`.
    Lost,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(why) => write!(f, "invalid jetbridge service configuration: {why}"),
            Error::Nats(err) => write!(f, "nats: {err}"),
            Error::Heartbeat(err) => err.fmt(f),
            Error::Lost => f.write_str("attempt lost: the dispatcher no longer runs it"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(_) | Error::Lost => None,
            Error::Nats(err) => Some(err.as_ref()),
            Error::Heartbeat(err) => Some(err),
        }
    }
}

impl From<HeartbeatError> for Error {
    fn from(err: HeartbeatError) -> Self {
        Error::Heartbeat(err)
    }
}

/// Wraps any NATS client error; they all box into [`async_nats::Error`].
pub(crate) fn nats(err: impl Into<async_nats::Error>) -> Error {
    Error::Nats(err.into())
}
