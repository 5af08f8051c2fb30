//! The conformance handler: the task types, events and environment of `interop/README.md`,
//! which `interop/conformance` drives to check this library against a real dispatcher.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use jetbridge::{HandlerError, Next, Output, Service, ServiceBuilder, Task};
use serde::Deserialize;
use serde_json::json;

/// Where the suite listens for `started` and `cancelled` events.
const EVENTS_SUBJECT: &str = "jetbridge.conformance.events";
const SERVICE_NAME: &str = "jetbridge-conformance";
const SERVICE_VERSION: &str = "1.0.0";

/// What every conformance handler needs: the connection for events and this replica's name.
struct Conformance {
    client: async_nats::Client,
    instance: String,
}

impl Conformance {
    async fn event(&self, event: &str, task_id: &str, attempt: u64, reason: Option<&str>) {
        let mut body = json!({
            "event": event,
            "task_id": task_id,
            "attempt": attempt,
            "instance": self.instance,
        });
        if let Some(reason) = reason {
            body["reason"] = reason.into();
        }
        let body = serde_json::to_vec(&body).expect("JSON serializes");
        if let Err(err) = self.client.publish(EVENTS_SUBJECT, body.into()).await {
            eprintln!("jetbridge-conformance: {event} event not sent: {err}");
        }
    }
}

type Handler = dyn Fn(Task) -> BoxFuture<'static, Result<Output, HandlerError>> + Send + Sync;

/// Wraps a handler so that every attempt publishes its `started` event before the work begins.
fn announced<F, Fut>(conf: &Arc<Conformance>, handler: F) -> Box<Handler>
where
    F: Fn(Arc<Conformance>, Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Output, HandlerError>> + Send + 'static,
{
    let conf = conf.clone();
    Box::new(move |task: Task| {
        let (task_id, attempt) = (task.id().to_owned(), task.attempt());
        let announce = conf.clone();
        // Not started yet: a future does nothing until it is polled, after the event.
        let run = handler(conf.clone(), task);
        Box::pin(async move {
            announce.event("started", &task_id, attempt, None).await;
            run.await
        })
    })
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jetbridge-conformance: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let url = env_or("NATS_URL", "nats://127.0.0.1:4222");
    let prefix = env_or(
        "JETBRIDGE_SUBJECT_PREFIX",
        jetbridge::DEFAULT_SUBJECT_PREFIX,
    );
    let instance = std::env::var("JETBRIDGE_INSTANCE").unwrap_or_else(|_| random_instance());
    let concurrency = match std::env::var("JETBRIDGE_CONCURRENCY") {
        Ok(text) => text
            .parse()
            .map_err(|err| format!("JETBRIDGE_CONCURRENCY={text:?}: {err}"))?,
        Err(_) => jetbridge::DEFAULT_CONCURRENCY,
    };

    let client = async_nats::ConnectOptions::new()
        .name(format!("{SERVICE_NAME}-{instance}"))
        .connect(url.as_str())
        .await?;
    let conf = Arc::new(Conformance {
        client: client.clone(),
        instance,
    });
    let mut builder = use_middleware(
        Service::builder(SERVICE_NAME, SERVICE_VERSION)
            .description("Jetbridge conformance handler (Rust)")
            .subject_prefix(prefix)
            .concurrency(concurrency),
    );
    let handlers: [(&str, Box<Handler>); 10] = [
        ("conf:echo", announced(&conf, echo)),
        ("conf:info", announced(&conf, info)),
        ("conf:fail", announced(&conf, fail)),
        ("conf:retry_after", announced(&conf, retry_after)),
        ("conf:terminate", announced(&conf, terminate)),
        ("conf:sleep", announced(&conf, sleep)),
        ("conf:big", announced(&conf, big)),
        ("conf:panic", announced(&conf, panic)),
        ("conf:mw", announced(&conf, mw)),
        ("conf:mw_blocked", announced(&conf, mw)),
    ];
    for (task_type, handler) in handlers {
        builder = builder.handler(task_type, handler);
    }
    let service = builder.start(client).await?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    drop(stdout);

    service.run().await?;
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A replica name unique enough for one test run, without a random-number crate.
fn random_instance() -> String {
    format!(
        "rust-{:016x}",
        RandomState::new().hash_one(std::process::id())
    )
}

async fn echo(_: Arc<Conformance>, mut task: Task) -> Result<Output, HandlerError> {
    Ok(task.take_payload())
}

async fn info(conf: Arc<Conformance>, task: Task) -> Result<Output, HandlerError> {
    Ok(Output::Json(json!({
        "instance": conf.instance,
        "lang": "rust",
        "task_id": task.id(),
        "attempt": task.attempt(),
        "max_attempts": task.max_attempts(),
        "queue": task.queue(),
        "budget_ms": u64::try_from(task.budget().as_millis()).unwrap_or(u64::MAX),
    })))
}

#[derive(Deserialize)]
struct Fail {
    times: u64,
}

async fn fail(_: Arc<Conformance>, task: Task) -> Result<Output, HandlerError> {
    let Fail { times } = task.json()?;
    let attempt = task.attempt();
    if attempt <= times {
        return Err(HandlerError::retry(
            "planned_failure",
            format!("failure {attempt} of {times}"),
        ));
    }
    Ok(Output::Json(json!({ "attempt": attempt })))
}

#[derive(Deserialize)]
struct RetryAfter {
    ms: u64,
}

async fn retry_after(_: Arc<Conformance>, task: Task) -> Result<Output, HandlerError> {
    let RetryAfter { ms } = task.json()?;
    if task.attempt() == 1 {
        return Err(
            HandlerError::retry("planned_failure", format!("retry after {ms} ms"))
                .after(Duration::from_millis(ms)),
        );
    }
    Ok(Output::Json(json!({ "attempt": task.attempt() })))
}

#[derive(Deserialize)]
struct Terminate {
    message: String,
}

async fn terminate(_: Arc<Conformance>, task: Task) -> Result<Output, HandlerError> {
    let Terminate { message } = task.json()?;
    Err(HandlerError::terminate("planned_terminate", message))
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
    #[serde(default = "one")]
    steps: u64,
    only_attempt: Option<u64>,
    #[serde(default)]
    ignore_cancel: bool,
}

fn one() -> u64 {
    1
}

async fn sleep(conf: Arc<Conformance>, task: Task) -> Result<Output, HandlerError> {
    let Sleep {
        ms,
        steps,
        only_attempt,
        ignore_cancel,
    } = task.json()?;
    let attempt = task.attempt();
    if only_attempt.is_some_and(|only| only != attempt) {
        return Ok(Output::Json(json!({ "slept_ms": 0, "attempt": attempt })));
    }
    let steps = steps.max(1);
    let step = Duration::from_millis(ms) / u32::try_from(steps).unwrap_or(u32::MAX);
    for i in 1..=steps {
        if ignore_cancel {
            tokio::time::sleep(step).await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(step) => {}
                () = task.cancelled() => return Err(cancelled(&conf, &task).await),
            }
        }
        let progress = i as f64 / steps as f64;
        if let Err(err) = task
            .heartbeat(Some(progress), Some(&format!("step {i} of {steps}")))
            .await
        {
            eprintln!("jetbridge-conformance: heartbeat not sent: {err}");
        }
    }
    Ok(Output::Json(json!({ "slept_ms": ms, "attempt": attempt })))
}

/// Reports a cancel message as an event; the reply that follows is stale, but sent all the same.
async fn cancelled(conf: &Conformance, task: &Task) -> HandlerError {
    let reason = task
        .cancel_reason()
        .map_or("unknown", |reason| reason.as_str());
    if task
        .cancel_reason()
        .is_some_and(|reason| reason.is_from_dispatcher())
    {
        conf.event("cancelled", task.id(), task.attempt(), Some(reason))
            .await;
    }
    HandlerError::retry("cancelled", format!("cancelled: {reason}"))
}

#[derive(Deserialize)]
struct Big {
    bytes: usize,
}

async fn big(_: Arc<Conformance>, task: Task) -> Result<Output, HandlerError> {
    let Big { bytes } = task.json()?;
    Ok(Output::bytes(vec![b'a'; bytes], "application/octet-stream"))
}

async fn panic(_: Arc<Conformance>, _: Task) -> Result<Output, HandlerError> {
    panic!("conf:panic: a planned panic");
}

/// The conformance middleware in the order SPEC §12.2 gives: outer, group (`conf:mw*`), inner,
/// block (`conf:mw_blocked`).
fn use_middleware(builder: ServiceBuilder) -> ServiceBuilder {
    builder
        .middleware(tagger("outer"))
        .middleware_for("conf:mw*", tagger("group"))
        .middleware(tagger("inner"))
        .middleware_for("conf:mw_blocked", |_task: Task, _next: Next| async {
            Err(HandlerError::terminate("mw_blocked", "blocked by middleware"))
        })
}

/// Appends `name` to a `trail` result on the way out.
fn tagger(
    name: &'static str,
) -> impl Fn(Task, Next) -> BoxFuture<'static, Result<Output, HandlerError>> + Send + Sync + 'static {
    move |task: Task, next: Next| {
        Box::pin(async move {
            let mut result = next.run(task).await;
            if let Ok(Output::Json(value)) = &mut result
                && let Some(trail) = value.get_mut("trail").and_then(|t| t.as_array_mut())
            {
                trail.push(name.into());
            }
            result
        })
    }
}

/// conf:mw and conf:mw_blocked (which middleware keeps from running).
async fn mw(_: Arc<Conformance>, _: Task) -> Result<Output, HandlerError> {
    Ok(Output::Json(json!({ "trail": ["handler"] })))
}
