//! Middleware: code around every handler, or the handlers of the task types matching a pattern.
//!
//! A middleware sees the [`Task`] before the handler does and what the handler returned after:
//! it can short-circuit (return a [`HandlerError`] without calling [`Next::run`]), change the
//! result, or time and log the call. Any `Fn(Task, Next) -> impl Future` is one:
//!
//! ```
//! use jetbridge::{HandlerError, Next, Service, Task};
//!
//! let builder = Service::builder("mailer", "1.0.0").middleware_for(
//!     "email:*",
//!     |task: Task, next: Next| async move {
//!         if task.attempt() > 5 {
//!             return Err(HandlerError::terminate("too_many_tries", "giving up on this email"));
//!         }
//!         next.run(task).await
//!     },
//! );
//! ```

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::output::{HandlerError, Output};
use crate::protocol::CancelReason;
use crate::protocol::error_code::HANDLER_ERROR;
use crate::service::Handler;
use crate::task::Task;

/// What a handler, and so every middleware, returns.
pub type HandlerResult = Result<Output, HandlerError>;

/// Code around handlers; register it with
/// [`ServiceBuilder::middleware`](crate::ServiceBuilder::middleware) or
/// [`ServiceBuilder::middleware_for`](crate::ServiceBuilder::middleware_for).
pub trait Middleware: Send + Sync + 'static {
    /// Handles the task, calling `next.run(task)` for the rest of the chain (or not).
    fn call(&self, task: Task, next: Next) -> BoxFuture<'static, HandlerResult>;
}

impl<F, Fut> Middleware for F
where
    F: Fn(Task, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, task: Task, next: Next) -> BoxFuture<'static, HandlerResult> {
        Box::pin(self(task, next))
    }
}

/// The rest of the chain: the middleware after this one, then the handler.
#[derive(Clone)]
pub struct Next {
    chain: Arc<[Arc<dyn Middleware>]>,
    index: usize,
    handler: Handler,
}

impl Next {
    /// Runs the rest of the chain on `task`.
    pub fn run(self, task: Task) -> BoxFuture<'static, HandlerResult> {
        match self.chain.get(self.index).cloned() {
            Some(middleware) => {
                let next = Next {
                    index: self.index + 1,
                    ..self
                };
                // Called inside the future, so that a middleware panicking in `call` itself is
                // caught by the `CatchPanic` outside it.
                Box::pin(async move { middleware.call(task, next).await })
            }
            None => (self.handler)(task),
        }
    }
}

/// Wraps `handler` in `chain` (outermost first), behind [`CatchPanic`].
pub(crate) fn wrap(handler: Handler, chain: Vec<Arc<dyn Middleware>>) -> Handler {
    let mut all: Vec<Arc<dyn Middleware>> = vec![Arc::new(CatchPanic)];
    all.extend(chain);
    let chain: Arc<[Arc<dyn Middleware>]> = all.into();
    Arc::new(move |task| {
        Next {
            chain: chain.clone(),
            index: 0,
            handler: handler.clone(),
        }
        .run(task)
    })
}

/// Whether `task_type` matches `pattern`, where `*` stands for any run of characters (also
/// none), as in `email:*`.
pub(crate) fn matches(pattern: &str, task_type: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == task_type,
        Some((head, tail)) => {
            let Some(rest) = task_type.strip_prefix(head) else {
                return false;
            };
            // Try every split of what follows the literal head.
            rest.char_indices()
                .map(|(i, _)| i)
                .chain([rest.len()])
                .any(|i| matches(tail, &rest[i..]))
        }
    }
}

/// Turns a panic in the rest of the chain into a `retry` with code `handler_error`. Every
/// service has it outermost; add it further in to recover closer to the handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanic;

impl Middleware for CatchPanic {
    fn call(&self, task: Task, next: Next) -> BoxFuture<'static, HandlerResult> {
        let (id, task_type) = (task.id().to_owned(), task.task_type().to_owned());
        Box::pin(async move {
            match AssertUnwindSafe(next.run(task)).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    let why = format!("handler panicked: {}", panic_text(panic.as_ref()));
                    warn!(task_id = %id, task_type = %task_type, "jetbridge: {why}");
                    Err(HandlerError::retry(HANDLER_ERROR, why))
                }
            }
        })
    }
}

/// The text a panic was raised with, when it was raised with text.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

/// Logs each attempt when it ends through `tracing`: task id, type, queue, attempt and duration,
/// at INFO for success and WARN (with the error's code) for a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logging;

impl Middleware for Logging {
    fn call(&self, task: Task, next: Next) -> BoxFuture<'static, HandlerResult> {
        let id = task.id().to_owned();
        let task_type = task.task_type().to_owned();
        let queue = task.queue().to_owned();
        let attempt = task.attempt();
        Box::pin(async move {
            let start = Instant::now();
            let result = next.run(task).await;
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            match &result {
                Ok(_) => {
                    info!(task_id = %id, %task_type, %queue, attempt, duration_ms = ms, "jetbridge: attempt done")
                }
                Err(err) => warn!(task_id = %id, %task_type, %queue, attempt, duration_ms = ms,
                    code = err.code(), message = err.message(), "jetbridge: attempt failed"),
            }
            result
        })
    }
}

/// Cancels the attempt with reason `Timeout` once its duration has passed, when that comes before
/// the budget: a per-task-type limit tighter than the queue's. The handler sees the cancel as
/// any other and its reply is still sent.
#[derive(Debug, Clone, Copy)]
pub struct Timeout(pub Duration);

impl Middleware for Timeout {
    fn call(&self, task: Task, next: Next) -> BoxFuture<'static, HandlerResult> {
        let limit = self.0;
        let attempt = task.state();
        Box::pin(async move {
            let run = next.run(task);
            tokio::pin!(run);
            tokio::select! {
                result = &mut run => result,
                () = tokio::time::sleep(limit) => {
                    attempt.cancel(CancelReason::Timeout);
                    run.await
                }
            }
        })
    }
}
