//! OpenTelemetry tracing (the `otel` cargo feature): a middleware that continues the dispatcher's
//! trace, and OTLP/HTTP export set up from the standard `OTEL_*` environment variables.
//!
//! The dispatcher sends each attempt's W3C `traceparent` in the request; [`Tracing`] starts a
//! server span `process <type>` as its child, with the task's id, type, queue and attempt, and
//! records how the attempt ended (`jetbridge.outcome`: complete, retry or terminate, with the error
//! code and an error status). Inside the handler the span is the current OpenTelemetry context,
//! so spans the handler starts are its children.
//!
//! ```no_run
//! use jetbridge::Service;
//!
//! # async fn run(client: jetbridge::async_nats::Client) -> Result<(), Box<dyn std::error::Error>> {
//! // Some(provider) when OTEL_TRACES_EXPORTER or an OTLP endpoint is set (and OTEL_SDK_DISABLED is not true).
//! let provider = jetbridge::otel::init_from_env("my-service")?;
//! let service = Service::builder("my-service", "1.0.0")
//!     .middleware(jetbridge::otel::Tracing::new())
//!     .handler("greet", |_task| async { Ok(jetbridge::Output::Json(serde_json::json!("hi"))) })
//!     .start(client)
//!     .await?;
//! service.run().await?;
//! if let Some(provider) = provider {
//!     provider.shutdown()?; // flush what is left
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;

use futures::future::BoxFuture;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::middleware::{HandlerResult, Middleware, Next};
use crate::task::Task;

/// The instrumentation scope's name.
const SCOPE: &str = "jetbridge";

/// Whether the environment asks for trace export: `OTEL_TRACES_EXPORTER` set to something other
/// than `none`, or an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set; never when `OTEL_SDK_DISABLED` is `true`. The same rule
/// as the dispatcher's and every other Jetbridge library's (docs/tracing.md).
pub fn enabled_by_env() -> bool {
    enabled_with(|name| std::env::var(name).ok())
}

/// The rule of [`enabled_by_env`] over any source of variables.
fn enabled_with(get: impl Fn(&str) -> Option<String>) -> bool {
    let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    match var("OTEL_TRACES_EXPORTER") {
        Some(v) => !v.trim().eq_ignore_ascii_case("none"),
        None => var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some(),
    }
}

/// Sets up OTLP/HTTP (protobuf) trace export from the `OTEL_*` variables and installs it as the
/// global tracer provider, when [`enabled_by_env`]; `None` (and nothing installed) otherwise.
/// `service_name` is used unless `OTEL_SERVICE_NAME` names one. Call `shutdown()` on the provider
/// before exiting, so the last spans are sent.
pub fn init_from_env(service_name: &str) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    if !enabled_by_env() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| service_name.to_owned());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(name).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    global::set_tracer_provider(provider.clone());
    Ok(Some(provider))
}

/// The tracing middleware: one server span per attempt, the child of the request's `traceparent`.
/// It uses the global tracer provider, so it costs next to nothing until one is installed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracing;

impl Tracing {
    /// The middleware; register it with `ServiceBuilder::middleware`.
    pub fn new() -> Self {
        Tracing
    }
}

/// The parent context a request's traceparent names (the empty context without one).
fn parent(task: &Task) -> Context {
    let mut carrier = HashMap::new();
    if let Some(tp) = task.traceparent() {
        carrier.insert("traceparent".to_owned(), tp.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

impl Middleware for Tracing {
    fn call(&self, task: Task, next: Next) -> BoxFuture<'static, HandlerResult> {
        let tracer = global::tracer(SCOPE);
        let span = tracer
            .span_builder(format!("process {}", task.task_type()))
            .with_kind(SpanKind::Server)
            .with_attributes(vec![
                KeyValue::new("messaging.system", "jetbridge"),
                KeyValue::new("jetbridge.task.id", task.id().to_owned()),
                KeyValue::new("jetbridge.task.type", task.task_type().to_owned()),
                KeyValue::new("jetbridge.queue", task.queue().to_owned()),
                KeyValue::new("jetbridge.attempt", i64::try_from(task.attempt()).unwrap_or(i64::MAX)),
            ])
            .start_with_context(&tracer, &parent(&task));
        let cx = Context::current_with_span(span);
        Box::pin(async move {
            let result = next.run(task).with_context(cx.clone()).await;
            let span = cx.span();
            match &result {
                // The status stays unset on success, as OpenTelemetry asks of instrumentation libraries.
                Ok(_) => span.set_attribute(KeyValue::new("jetbridge.outcome", "complete")),
                Err(err) => {
                    let outcome = if err.is_retry() { "retry" } else { "terminate" };
                    span.set_attribute(KeyValue::new("jetbridge.outcome", outcome));
                    span.set_attribute(KeyValue::new("jetbridge.error.code", err.code().to_owned()));
                    span.set_status(Status::error(format!("{}: {}", err.code(), err.message())));
                }
            }
            span.end();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(vars: &[(&str, &str)]) -> bool {
        enabled_with(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn the_enabling_rule() {
        assert!(!enabled(&[]));
        assert!(enabled(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318")]));
        assert!(enabled(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x:4318/v1/traces")]));
        assert!(enabled(&[("OTEL_TRACES_EXPORTER", "otlp")]));
        assert!(!enabled(&[("OTEL_TRACES_EXPORTER", "none"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x")]));
        assert!(!enabled(&[("OTEL_SDK_DISABLED", "TRUE"), ("OTEL_TRACES_EXPORTER", "otlp")]));
    }

    #[test]
    fn a_traceparent_names_the_parent() {
        let mut carrier = HashMap::new();
        carrier.insert("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
        let cx = TraceContextPropagator::new().extract(&carrier);
        let parent = cx.span().span_context().clone();
        assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_remote());
    }
}
