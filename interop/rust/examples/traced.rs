//! A handler service with OpenTelemetry tracing (needs `--features otel`), used by tests/tracing:
//! it serves the task type named by `JETBRIDGE_TYPE`, fails an attempt with a retry when the
//! payload's `fail_attempts` is at least the attempt number, and completes it otherwise.
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 JETBRIDGE_TYPE=trace:rust \
//!     cargo run --features otel --example traced
//! ```

use jetbridge::otel::{Tracing, init_from_env};
use jetbridge::{HandlerError, Output, Service, Task};
use serde_json::json;

async fn handle(task: Task) -> Result<Output, HandlerError> {
    let payload: serde_json::Value = task.json()?;
    let fail = payload.get("fail_attempts").and_then(serde_json::Value::as_u64).unwrap_or(0);
    if task.attempt() <= fail {
        return Err(HandlerError::retry("planned_failure", format!("attempt {} fails on purpose", task.attempt())));
    }
    Ok(Output::Json(json!({ "lang": "rust", "attempt": task.attempt() })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let task_type = std::env::var("JETBRIDGE_TYPE").unwrap_or_else(|_| "trace:rust".to_owned());
    let provider = init_from_env("traced-rust")?;
    let client = jetbridge::async_nats::connect(url).await?;
    let service = Service::builder("traced-rust", "1.0.0")
        .middleware(Tracing::new())
        .handler(task_type.clone(), handle)
        .start(client)
        .await?;
    println!("ready: {task_type}");
    service.run().await?;
    if let Some(provider) = provider {
        provider.shutdown()?;
    }
    Ok(())
}
