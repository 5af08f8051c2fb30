//! A small handler service: `greet` answers `{"name": "Ada"}` with a greeting, reporting progress
//! and stopping early when the attempt is cancelled.
//!
//! Run it next to a nats-server and a dispatcher (see README.md):
//!
//! ```text
//! NATS_URL=nats://127.0.0.1:4222 cargo run --example greeter
//! jetbridge enqueue greet '{"name": "Ada"}'
//! ```

use std::time::Duration;

use jetbridge::{HandlerError, Output, Service, Task};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Greet {
    name: String,
}

async fn greet(task: Task) -> Result<Output, HandlerError> {
    // A payload that does not fit is a terminate error with code bad_payload.
    let Greet { name } = task.json()?;
    if name.trim().is_empty() {
        return Err(HandlerError::terminate("no_name", "name is empty"));
    }

    // Pretend to work, reporting progress; stop if the dispatcher gives up on the attempt.
    for step in 1..=3 {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
            () = task.cancelled() => {
                return Err(HandlerError::retry("cancelled", "stopped before finishing"));
            }
        }
        let progress = f64::from(step) / 3.0;
        // A lost heartbeat is not worth failing the task for.
        let _ = task.heartbeat(Some(progress), Some("thinking")).await;
    }

    Ok(Output::Json(json!({
        "greeting": format!("Hello, {name}!"),
        "attempt": task.attempt(),
    })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let client = jetbridge::async_nats::connect(url).await?;

    let service = Service::builder("greeter", "1.0.0")
        .description("Greets people")
        .handler("greet", greet)
        .start(client)
        .await?;
    println!("greeter ready: listening on jetbridge.task.greet");

    // Serve until SIGTERM or Ctrl-C, then finish running attempts and exit.
    service.run().await?;
    Ok(())
}
