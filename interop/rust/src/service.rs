//! [`Service`]: a running handler service: its request loop, its concurrency limit and its drain.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::endpoint::Endpoint;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::{SelectAll, select_all};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::attempt;
use crate::builder::ServiceBuilder;
use crate::error::{Error, nats};
use crate::output::{HandlerError, Output};
use crate::stats::EndpointStats;
use crate::task::Task;

/// A registered handler, type-erased.
pub(crate) type Handler =
    Arc<dyn Fn(Task) -> BoxFuture<'static, Result<Output, HandlerError>> + Send + Sync>;

/// What every attempt of a service needs.
pub(crate) struct Shared {
    pub(crate) client: async_nats::Client,
    pub(crate) handlers: HashMap<String, Handler>,
    /// Keyed by endpoint subject, which every request carries.
    pub(crate) stats: HashMap<String, Arc<EndpointStats>>,
    /// Cancelled when a drain runs out of time: running attempts are then cancelled.
    pub(crate) hard_stop: CancellationToken,
    /// One permit per attempt allowed to run at once.
    pub(crate) slots: Arc<Semaphore>,
    attempts: TaskTracker,
}

/// A running handler service. Drop it only after [`Service::drain`] (or one of the `run`
/// methods) has returned, or requests in flight are abandoned.
pub struct Service {
    micro: async_nats::service::Service,
    shared: Arc<Shared>,
    stop_taking: CancellationToken,
    serving: JoinHandle<()>,
    drain_timeout: Duration,
}

impl Service {
    /// Starts configuring a service. `name` and `version` are the micro service's: a name of
    /// `A-Z a-z 0-9 - _` and a semantic version.
    pub fn builder(name: impl Into<String>, version: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder::new(name.into(), version.into())
    }

    /// Starts taking requests from `endpoints`, which the builder has registered.
    pub(crate) fn launch(
        micro: async_nats::service::Service,
        client: async_nats::Client,
        endpoints: Vec<Endpoint>,
        handlers: HashMap<String, Handler>,
        stats: HashMap<String, Arc<EndpointStats>>,
        concurrency: usize,
        drain_timeout: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            client,
            handlers,
            stats,
            hard_stop: CancellationToken::new(),
            slots: Arc::new(Semaphore::new(concurrency)),
            attempts: TaskTracker::new(),
        });
        let stop_taking = CancellationToken::new();
        let serving = tokio::spawn(serve_requests(
            select_all(endpoints),
            shared.clone(),
            stop_taking.clone(),
        ));
        Self {
            micro,
            shared,
            stop_taking,
            serving,
            drain_timeout,
        }
    }

    /// Serves until SIGTERM or SIGINT (Ctrl-C), then drains.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(crate::signal::shutdown()).await
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        shutdown.await;
        self.drain().await
    }

    /// Stops taking requests, answers those already received, waits for running attempts (up to
    /// the drain timeout, then cancels them and waits for them to return), flushes the replies
    /// and unregisters the service.
    pub async fn drain(self) -> Result<(), Error> {
        let Service {
            micro,
            shared,
            stop_taking,
            serving,
            drain_timeout,
        } = self;
        info!("jetbridge: draining");
        stop_taking.cancel();
        let mut finished = pin!(async {
            if let Err(err) = serving.await {
                warn!(error = %err, "jetbridge: request loop failed");
            }
            shared.attempts.close();
            shared.attempts.wait().await;
        });
        if tokio::time::timeout(drain_timeout, &mut finished)
            .await
            .is_err()
        {
            warn!("jetbridge: drain timeout passed; cancelling running attempts");
            shared.hard_stop.cancel();
            finished.await;
        }
        shared.client.flush().await.map_err(nats)?;
        micro.stop().await.map_err(Error::Nats)
    }
}

/// Takes requests from all endpoints until the service drains, then serves what is left.
///
/// Every request is taken at once, whether or not a slot is free: its attempt heartbeats from
/// its arrival and waits for a slot itself (protocol 1.1 rule 1). One loop for all endpoints.
async fn serve_requests(
    mut requests: SelectAll<Endpoint>,
    shared: Arc<Shared>,
    stop_taking: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            biased;
            () = stop_taking.cancelled() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => return,
            },
        };
        spawn_attempt(&shared, request);
    }
    for endpoint in requests.iter_mut() {
        if let Err(err) = endpoint.stop().await {
            warn!(error = %err, "jetbridge: unsubscribe failed");
        }
    }
    // The server may already have routed requests to us; they are ours to answer.
    while let Some(request) = requests.next().await {
        spawn_attempt(&shared, request);
    }
}

fn spawn_attempt(shared: &Arc<Shared>, request: async_nats::service::Request) {
    let shared_for_attempt = shared.clone();
    shared
        .attempts
        .spawn(attempt::serve(request, shared_for_attempt));
}
