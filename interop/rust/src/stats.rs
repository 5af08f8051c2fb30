//! Per-endpoint counters shown in `nats micro stats` as each endpoint's `data`.
//!
//! async-nats counts an error in `num_errors` only when the reply has an empty body, but every
//! jetbridge reply has a `task_reply` body; these counters say what micro's cannot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::protocol::Reply;

/// Attempts running and replies sent by one endpoint.
#[derive(Debug, Default)]
pub(crate) struct EndpointStats {
    running: AtomicU64,
    ok: AtomicU64,
    retry: AtomicU64,
    terminate: AtomicU64,
}

/// Counts one attempt as running until dropped.
pub(crate) struct Running<'a>(&'a EndpointStats);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EndpointStats {
    pub(crate) fn start(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        Running(self)
    }

    pub(crate) fn record(&self, reply: &Reply) {
        let counter = match reply {
            Reply::Ok(_) => &self.ok,
            Reply::Retry { .. } | Reply::UnsupportedProtocol { .. } => &self.retry,
            Reply::Terminate { .. } => &self.terminate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "running": self.running.load(Ordering::Relaxed),
            "ok": self.ok.load(Ordering::Relaxed),
            "retry": self.retry.load(Ordering::Relaxed),
            "terminate": self.terminate.load(Ordering::Relaxed),
        })
    }
}
