//! Prometheus metrics (the `prometheus` cargo feature): a middleware that counts and times every
//! attempt by task type and outcome, for services that expose `/metrics`.
//!
//! The metrics are those of the Python SDK's `prometheus_metrics()`, so one dashboard serves
//! handlers in every language:
//!
//! - `jetbridge_handler_attempts_total{type,outcome}`: attempts that ended;
//! - `jetbridge_handler_duration_seconds{type,outcome}`: their duration;
//! - `jetbridge_handler_in_progress{type}`: attempts running now.
//!
//! The outcome is `ok`, `retry` or `terminate` (what the chain returned), `error` (it panicked:
//! the service replies a retry with code `handler_error`) or `cancelled` (the attempt's future was
//! dropped before it ended).
//!
//! ```no_run
//! use jetbridge::Service;
//! use jetbridge::prometheus::PrometheusMetrics;
//!
//! # async fn run(client: jetbridge::async_nats::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = PrometheusMetrics::new()?; // in prometheus::default_registry()
//! let service = Service::builder("my-service", "1.0.0")
//!     .middleware(metrics)
//!     .handler("greet", |_task| async { Ok(jetbridge::Output::Json(serde_json::json!("hi"))) })
//!     .start(client)
//!     .await?;
//! // serve prometheus::TextEncoder::new().encode_to_string(&prometheus::gather()) on /metrics
//! service.run().await?;
//! # Ok(())
//! # }
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Instant;

use ::prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use futures::FutureExt as _;
use futures::future::BoxFuture;

use crate::middleware::{HandlerResult, Middleware, Next};
use crate::task::Task;

/// The duration histogram's bucket bounds in seconds (the Python SDK's): from a millisecond to an
/// hour, since handlers range from cache lookups to long reports.
pub const BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// The metrics middleware; register it with `ServiceBuilder::middleware`. Clone it to measure a
/// second service of the process with the same metrics.
#[derive(Debug, Clone)]
pub struct PrometheusMetrics {
    attempts: IntCounterVec,
    duration: HistogramVec,
    in_progress: IntGaugeVec,
}

/// The metrics made in the default registry, shared by every [`PrometheusMetrics::new`].
static DEFAULT: Mutex<Option<PrometheusMetrics>> = Mutex::new(None);

impl PrometheusMetrics {
    /// The metrics in `prometheus::default_registry()`, registered on the first call and shared
    /// by the later ones (two services of one process). Fails when that registry already holds
    /// other metrics of these names.
    pub fn new() -> Result<Self, ::prometheus::Error> {
        let mut made = DEFAULT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(metrics) = &*made {
            return Ok(metrics.clone());
        }
        let metrics = Self::with_registry(::prometheus::default_registry())?;
        *made = Some(metrics.clone());
        Ok(metrics)
    }

    /// The metrics, registered in `registry`. Fails when it already holds metrics of these names
    /// (from an earlier call: clone that one instead).
    pub fn with_registry(registry: &Registry) -> Result<Self, ::prometheus::Error> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "jetbridge_handler_attempts_total",
                "Handler attempts that ended, by task type and outcome",
            ),
            &["type", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "jetbridge_handler_duration_seconds",
                "Handler attempt duration by outcome",
            )
            .buckets(BUCKETS.to_vec()),
            &["type", "outcome"],
        )?;
        let in_progress = IntGaugeVec::new(
            Opts::new(
                "jetbridge_handler_in_progress",
                "Handler attempts running now",
            ),
            &["type"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_progress.clone()))?;
        Ok(Self {
            attempts,
            duration,
            in_progress,
        })
    }
}

/// One attempt being measured: recorded when dropped, as `cancelled` unless an outcome was set.
struct Measured {
    metrics: PrometheusMetrics,
    task_type: String,
    running: IntGauge,
    started: Instant,
    outcome: Option<&'static str>,
}

impl Measured {
    /// Records the attempt as ended with `outcome`.
    fn end(mut self, outcome: &'static str) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        self.running.dec();
        let labels = [self.task_type.as_str(), self.outcome.unwrap_or("cancelled")];
        self.metrics.attempts.with_label_values(&labels).inc();
        self.metrics
            .duration
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Middleware for PrometheusMetrics {
    fn call(&self, task: Task, next: Next) -> BoxFuture<'static, HandlerResult> {
        let task_type = task.task_type().to_owned();
        let running = self.in_progress.with_label_values(&[task_type.as_str()]);
        running.inc();
        let measured = Measured {
            metrics: self.clone(),
            task_type,
            running,
            started: Instant::now(),
            outcome: None,
        };
        Box::pin(async move {
            match AssertUnwindSafe(next.run(task)).catch_unwind().await {
                Ok(result) => {
                    measured.end(match &result {
                        Ok(_) => "ok",
                        Err(err) if err.is_retry() => "retry",
                        Err(_) => "terminate",
                    });
                    result
                }
                Err(panic) => {
                    // Counted, then passed on to the service's panic recovery further out.
                    measured.end("error");
                    std::panic::resume_unwind(panic)
                }
            }
        })
    }
}
