//! Write Jetbridge task handlers in Rust.
//!
//! A handler service is a NATS micro service that runs attempts of tasks sent by the Jetbridge
//! dispatcher, speaking the wire protocol of `protocol/SPEC.md`. This crate does the protocol:
//! decoding requests, replies with the right error headers, heartbeats, cancels, the budget,
//! result size limits, concurrency and a graceful drain. You write one async function per task
//! type.
//!
//! ```no_run
//! use jetbridge::{HandlerError, Output, Service, Task};
//! use serde_json::json;
//!
//! #[derive(serde::Deserialize)]
//! struct Greet {
//!     name: String,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let client = jetbridge::async_nats::connect("nats://127.0.0.1:4222").await?;
//!     Service::builder("greeter", "1.0.0")
//!         .handler("greet", |task: Task| async move {
//!             let greet: Greet = task.json()?;
//!             if greet.name.is_empty() {
//!                 return Err(HandlerError::terminate("no_name", "name is empty"));
//!             }
//!             Ok(Output::Json(json!({ "greeting": format!("hello, {}", greet.name) })))
//!         })
//!         .start(client)
//!         .await?
//!         .run() // until SIGTERM or Ctrl-C, then drain
//!         .await?;
//!     Ok(())
//! }
//! ```

mod attempt;
mod builder;
mod error;
pub mod middleware;
mod output;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod protocol;
mod service;
mod signal;
mod stats;
mod task;

pub use builder::{
    DEFAULT_CONCURRENCY, DEFAULT_DRAIN_TIMEOUT, DEFAULT_SUBJECT_PREFIX, QUEUE_GROUP, ServiceBuilder,
};
pub use error::Error;
pub use middleware::{Middleware, Next};
pub use output::{HandlerError, Output};
pub use protocol::{CancelReason, Payload};
pub use service::Service;
pub use task::Task;

/// Re-exported so that handlers need not depend on the same versions themselves.
pub use async_nats;
pub use tokio_util::sync::CancellationToken;
