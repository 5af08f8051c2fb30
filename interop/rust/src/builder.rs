//! [`ServiceBuilder`]: what a service serves and how, and its registration as a micro service.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::ServiceExt as _;
use async_nats::service::endpoint::Endpoint;

use crate::error::{Error, nats};
use crate::middleware::{self, Middleware};
use crate::output::{HandlerError, Output};
use crate::protocol::validate::{is_name, is_subject};
use crate::service::{Handler, Service};
use crate::stats::EndpointStats;
use crate::task::Task;

/// The queue group every jetbridge handler joins, so that replicas share the load (SPEC §2).
pub const QUEUE_GROUP: &str = "jetbridge";
/// Where the dispatcher's default route sends a task type: `<prefix>.<task_type>` (SPEC §2).
pub const DEFAULT_SUBJECT_PREFIX: &str = "jetbridge.task";
/// Attempts run at once unless [`ServiceBuilder::concurrency`] says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// How long a drain waits for running attempts before cancelling them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Service metadata naming the protocol versions spoken (SPEC §2).
const META_PROTOCOLS: &str = "jetbridge.protocols";
/// Service metadata naming this library (SPEC §2).
const META_SDK: &str = "jetbridge.sdk";
/// Endpoint metadata naming the task type, since endpoint names cannot hold every type.
const META_TASK_TYPE: &str = "jetbridge.task_type";

/// Configures and starts a [`Service`]; made by [`Service::builder`].
#[must_use = "a builder does nothing until started"]
pub struct ServiceBuilder {
    name: String,
    version: String,
    description: Option<String>,
    metadata: HashMap<String, String>,
    subject_prefix: String,
    concurrency: usize,
    drain_timeout: Duration,
    handlers: BTreeMap<String, Handler>,
    /// In registration order; a pattern of `None` applies to every task type.
    middleware: Vec<(Option<String>, Arc<dyn Middleware>)>,
}

impl ServiceBuilder {
    pub(crate) fn new(name: String, version: String) -> Self {
        Self {
            name,
            version,
            description: None,
            metadata: HashMap::new(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            concurrency: DEFAULT_CONCURRENCY,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            handlers: BTreeMap::new(),
            middleware: Vec::new(),
        }
    }

    /// Registers `handler` for `task_type`; a later registration for the same type replaces it.
    ///
    /// The handler gets the [`Task`] and returns the result or a [`HandlerError`]. It runs in
    /// its own tokio task; a panic becomes a `retry` reply with code `handler_error`.
    pub fn handler<F, Fut>(mut self, task_type: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Task) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Output, HandlerError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |task| Box::pin(handler(task)));
        self.handlers.insert(task_type.into(), handler);
        self
    }

    /// Adds middleware around every handler. Middleware run in the order they were added, the
    /// first outermost; those of [`ServiceBuilder::middleware_for`] run inside these. A panic
    /// anywhere in the chain becomes a `retry` with code `handler_error` ([`CatchPanic`] is
    /// always outermost). Built in: [`Logging`], [`Timeout`], [`CatchPanic`].
    ///
    /// [`CatchPanic`]: crate::middleware::CatchPanic
    /// [`Logging`]: crate::middleware::Logging
    /// [`Timeout`]: crate::middleware::Timeout
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push((None, Arc::new(middleware)));
        self
    }

    /// Adds middleware around the handlers of the task types matching `pattern`, in which `*`
    /// stands for any run of characters: `email:*`, `image:resize`.
    pub fn middleware_for(
        mut self,
        pattern: impl Into<String>,
        middleware: impl Middleware,
    ) -> Self {
        self.middleware
            .push((Some(pattern.into()), Arc::new(middleware)));
        self
    }

    /// The subject prefix: a handler for type `t` listens on `<prefix>.<t>`. Default
    /// [`DEFAULT_SUBJECT_PREFIX`]; change it only to match a dispatcher route table.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// How many attempts run at once, over all task types. Default [`DEFAULT_CONCURRENCY`].
    /// Requests beyond it wait for a free slot, heartbeated from the moment they arrive; one
    /// cancelled, or whose budget runs out, while it waits is answered without running.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit;
        self
    }

    /// How long a drain waits for running attempts before cancelling them (with reason
    /// [`CancelReason::Draining`](crate::CancelReason::Draining)). Default
    /// [`DEFAULT_DRAIN_TIMEOUT`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// A description shown by `nats micro info`.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds service metadata. The `jetbridge.*` keys are the library's and cannot be replaced.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Registers the micro service and its endpoints and starts taking requests.
    ///
    /// When this returns, the subscriptions are in place at the server.
    pub async fn start(self, client: async_nats::Client) -> Result<Service, Error> {
        self.validate()?;
        let routes = self.routes();
        let micro = self.register(&client, &routes).await?;
        let endpoints = match add_endpoints(&micro, &routes, &client).await {
            Ok(endpoints) => endpoints,
            Err(err) => {
                // Unregister rather than leave a service without endpoints answering PINGs.
                let _ = micro.stop().await;
                return Err(err);
            }
        };

        let stats = routes
            .into_iter()
            .map(|route| (route.subject, route.stats))
            .collect();
        let handlers = self
            .handlers
            .into_iter()
            .map(|(task_type, handler)| {
                let chain = chain_for(&self.middleware, &task_type);
                (task_type, middleware::wrap(handler, chain))
            })
            .collect();
        Ok(Service::launch(
            micro,
            client,
            endpoints,
            handlers,
            stats,
            self.concurrency,
            self.drain_timeout,
        ))
    }

    fn routes(&self) -> Vec<Route> {
        self.handlers
            .keys()
            .map(|task_type| Route {
                task_type: task_type.clone(),
                endpoint_name: endpoint_name(task_type),
                subject: format!("{}.{task_type}", self.subject_prefix),
                stats: Arc::default(),
            })
            .collect()
    }

    /// Starts the micro service itself, with the metadata of SPEC §2 and a stats handler that
    /// reports each route's counters.
    async fn register(
        &self,
        client: &async_nats::Client,
        routes: &[Route],
    ) -> Result<async_nats::service::Service, Error> {
        let mut metadata = self.metadata.clone();
        metadata.insert(
            META_PROTOCOLS.to_owned(),
            crate::protocol::PROTOCOLS_ADVERTISED.to_owned(),
        );
        metadata.insert(
            META_SDK.to_owned(),
            format!("rust/{}", env!("CARGO_PKG_VERSION")),
        );
        let stats_by_name: HashMap<String, Arc<EndpointStats>> = routes
            .iter()
            .map(|route| (route.endpoint_name.clone(), route.stats.clone()))
            .collect();
        let mut micro = client
            .service_builder()
            .queue_group(QUEUE_GROUP)
            .metadata(metadata)
            .stats_handler(move |name, _| {
                stats_by_name
                    .get(&name)
                    .map_or(serde_json::Value::Null, |stats| stats.to_json())
            });
        if let Some(description) = &self.description {
            micro = micro.description(description);
        }
        micro
            .start(&self.name, &self.version)
            .await
            .map_err(Error::Nats)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.handlers.is_empty() {
            return Err(Error::Config("no handlers registered".to_owned()));
        }
        if let Some(bad) = self.handlers.keys().find(|task_type| !is_name(task_type)) {
            return Err(Error::Config(format!(
                "task type {bad:?} is not a name (^[a-zA-Z0-9_:-]+$)"
            )));
        }
        let mut names: HashMap<String, &str> = HashMap::new();
        for task_type in self.handlers.keys() {
            if let Some(other) = names.insert(endpoint_name(task_type), task_type) {
                return Err(Error::Config(format!(
                    "task types {other:?} and {task_type:?} would share the endpoint name {:?}: \
                     one service cannot serve both",
                    endpoint_name(task_type)
                )));
            }
        }
        if !is_subject(&self.subject_prefix) {
            return Err(Error::Config(format!(
                "subject prefix {:?} is not a subject",
                self.subject_prefix
            )));
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".to_owned()));
        }
        Ok(())
    }
}

/// The middleware for `task_type`: every-type middleware first, then the matching patterns,
/// each group in registration order.
fn chain_for(
    registered: &[(Option<String>, Arc<dyn Middleware>)],
    task_type: &str,
) -> Vec<Arc<dyn Middleware>> {
    let global = registered.iter().filter(|(pattern, _)| pattern.is_none());
    let matching = registered.iter().filter(|(pattern, _)| {
        pattern
            .as_deref()
            .is_some_and(|pattern| middleware::matches(pattern, task_type))
    });
    global.chain(matching).map(|(_, m)| m.clone()).collect()
}

/// Adds an endpoint per route, then waits until the server has every subscription.
async fn add_endpoints(
    micro: &async_nats::service::Service,
    routes: &[Route],
    client: &async_nats::Client,
) -> Result<Vec<Endpoint>, Error> {
    let mut endpoints = Vec::with_capacity(routes.len());
    for route in routes {
        let endpoint = micro
            .endpoint_builder()
            .name(&route.endpoint_name)
            .metadata(HashMap::from([(
                META_TASK_TYPE.to_owned(),
                route.task_type.clone(),
            )]))
            .add(&route.subject)
            .await
            .map_err(Error::Nats)?;
        endpoints.push(endpoint);
    }
    client.flush().await.map_err(nats)?;
    Ok(endpoints)
}

/// Where one task type is served.
struct Route {
    task_type: String,
    /// The micro endpoint's name, unique within the service.
    endpoint_name: String,
    subject: String,
    stats: Arc<EndpointStats>,
}

/// A micro endpoint name for a task type (SPEC §2): micro names allow only `A-Z a-z 0-9 - _`,
/// so every other character (`:` above all) becomes `_`. The subject keeps the type as it is.
fn endpoint_name(task_type: &str) -> String {
    task_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_task_types() {
        assert!(middleware::matches("email:*", "email:new"));
        assert!(middleware::matches("email:*", "email:"));
        assert!(!middleware::matches("email:*", "image:resize"));
        assert!(middleware::matches("*:resize", "image:resize"));
        assert!(middleware::matches("a*b*c", "a-x-b-y-c"));
        assert!(!middleware::matches("a*b*c", "a-x-c"));
        assert!(middleware::matches("exact", "exact"));
        assert!(!middleware::matches("exact", "exactly"));
    }

    #[test]
    fn endpoint_names_are_micro_names() {
        assert_eq!(endpoint_name("email:new"), "email_new");
        assert_eq!(endpoint_name("resize"), "resize");
        assert_eq!(endpoint_name("x:y/z~1"), "x_y_z_1");
    }

    #[test]
    fn task_types_sharing_an_endpoint_name_are_refused() {
        let noop = |_: Task| async { Ok(Output::Json(serde_json::Value::Null)) };
        let builder = ServiceBuilder::new("svc".into(), "1.0.0".into())
            .handler("a:b", noop)
            .handler("a_b", noop);
        let err = builder.validate().unwrap_err().to_string();
        assert!(err.contains("\"a:b\"") && err.contains("\"a_b\""), "{err}");
    }
}
