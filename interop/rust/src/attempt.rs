//! Serving one request: decide, run the handler under supervision, reply once.

use std::future::pending;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::service::Request;
use async_nats::service::error::Error as MicroError;
use async_nats::{HeaderMap, Message, Subscriber};
use futures::StreamExt;
use tokio::task::JoinError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::middleware::panic_text;
use crate::output::{HandlerError, Output};
use crate::protocol::{
    CancelReason, EncodedReply, ErrorBody, Reply, TaskRequest, decode_cancel, decode_request,
    error_code, header,
};
use crate::service::{Handler, Shared};
use crate::stats::EndpointStats;
use crate::task::{AttemptState, Task, YEAR_MS};

/// Where the stats message of a reply goes: nowhere (no one subscribes). async-nats updates an
/// endpoint's stats in `respond`, after publishing, and counts an error only for
/// `respond(Err(..))`, which sends an empty body. So the crate has async-nats count each request
/// with an empty message to this subject, as a success or an error, and then publishes the real
/// reply itself: the stats tell the truth (SPEC §2), and whoever has a reply finds it counted.
const MICRO_STATS_SINK: &str = "_jetbridge.micro_stats.discard";

/// Answers one request; never fails, since there is nobody to report to but the log.
pub(crate) async fn serve(mut request: Request, shared: Arc<Shared>) {
    let received = Instant::now();
    let stats = shared.stats.get(request.message.subject.as_str()).cloned();
    let (reply, token) = answer(
        &request.message.payload,
        &shared,
        received,
        stats.as_deref(),
    )
    .await;
    let (reply, encoded) = fit(reply, token.as_deref(), shared.client.max_payload());
    if let Some(stats) = &stats {
        stats.record(&reply);
    }
    drop(reply); // a large result now lives on in `encoded` only
    respond(&mut request, encoded, &shared.client).await;
}

/// Has async-nats count the reply (processing time from the request's arrival; an error for a
/// retry or terminate), then sends it.
async fn respond(request: &mut Request, encoded: EncodedReply, client: &async_nats::Client) {
    let mut headers = HeaderMap::new();
    let mut failure = None;
    for (name, value) in &encoded.headers {
        headers.insert(*name, value.as_str());
        if *name == header::SERVICE_ERROR_CODE {
            failure.get_or_insert((0, String::new())).0 = value.parse().unwrap_or(500);
        } else if *name == header::SERVICE_ERROR {
            failure.get_or_insert((0, String::new())).1 = value.clone();
        }
    }
    let subject = request.message.subject.clone();
    let Some(reply_to) = request.message.reply.replace(MICRO_STATS_SINK.into()) else {
        warn!(%subject, "jetbridge: request had no reply subject; reply dropped");
        return;
    };
    let counted = match failure {
        Some((code, status)) => request.respond(Err(MicroError { code, status })).await,
        None => request.respond(Ok("".into())).await,
    };
    if let Err(err) = counted {
        debug!(%subject, error = %err, "jetbridge: stats message not sent");
    }
    let sent = if headers.is_empty() {
        client.publish(reply_to, encoded.body.into()).await
    } else {
        client
            .publish_with_headers(reply_to, headers, encoded.body.into())
            .await
    };
    if let Err(err) = sent {
        warn!(%subject, error = %err, "jetbridge: reply not sent");
    }
}

/// The reply for a request body, and the attempt token to echo in it.
async fn answer(
    body: &[u8],
    shared: &Shared,
    received: Instant,
    stats: Option<&EndpointStats>,
) -> (Reply, Option<String>) {
    let request = match decode_request(body) {
        Ok(request) => request,
        Err(rejection) => {
            debug!(
                code = rejection.code(),
                message = rejection.message(),
                "jetbridge: request rejected"
            );
            return (
                rejection.reply(),
                rejection.attempt_token().map(str::to_owned),
            );
        }
    };
    let token = Some(request.attempt_token.clone());
    let Some(handler) = shared.handlers.get(&request.task_type) else {
        let error = ErrorBody::new(
            error_code::UNKNOWN_TASK_TYPE,
            format!("no handler for task type {}", request.task_type),
        );
        return (Reply::Terminate { error }, token);
    };
    (
        supervise(handler, request, shared, received, stats).await,
        token,
    )
}

/// Supervises one attempt from its arrival: heartbeats (and fencing) and cancels from the
/// start, also while it waits for a free slot (protocol 1.1 rule 1), then runs the handler in
/// its own task, so that a panic becomes a reply rather than a lost attempt.
async fn supervise(
    handler: &Handler,
    request: TaskRequest,
    shared: &Shared,
    received: Instant,
    stats: Option<&EndpointStats>,
) -> Reply {
    let budget_end = received + timer_millis(request.budget_ms);
    let state = Arc::new(AttemptState::new(shared.client.clone(), &request, received));

    // Subscribed before the handler starts: whatever the handler publishes (a heartbeat, an
    // event) reaches the server after this subscription, so a dispatcher that reacts to it
    // with a cancel is heard.
    let cancels = match shared
        .client
        .subscribe(request.cancel_subject.clone())
        .await
    {
        Ok(subscriber) => Some(subscriber),
        Err(err) => {
            warn!(task_id = %request.task_id, error = %err, "jetbridge: cannot listen for cancels");
            None
        }
    };
    let beats = tokio::spawn(state.clone().keep_alive());
    let watch = tokio::spawn(watch(
        state.clone(),
        cancels,
        budget_end,
        shared.hard_stop.clone(),
    ));

    // A late request starts only once the dispatcher acknowledged a heartbeat (SPEC §5.2); if
    // it let the attempt go, the attempt is fenced here and never starts.
    let received_wall = SystemTime::now()
        .checked_sub(received.elapsed())
        .unwrap_or(UNIX_EPOCH);
    tokio::select! {
        biased;
        () = state.cancelled() => {}
        () = state.confirm_late(&request, received_wall) => {}
    }

    let slot = tokio::select! {
        biased;
        () = state.cancelled() => None,
        slot = shared.slots.clone().acquire_owned() => Some(slot.expect("the semaphore is never closed")),
    };
    let reply = match slot {
        // Cancelled, or out of budget, before it could start: running it now could only
        // produce a stale reply.
        None => {
            let why = state.reason().map_or("cancelled", CancelReason::as_str);
            HandlerError::retry(
                error_code::CANCELLED,
                format!("not started: attempt cancelled: {why}"),
            )
            .into_reply()
        }
        Some(slot) => {
            let running = stats.map(EndpointStats::start);
            let outcome =
                tokio::spawn(handler(Task::new(request, budget_end, state.clone()))).await;
            drop(running);
            drop(slot);
            reply_for(outcome)
        }
    };
    // Dropping the cancel subscriber (in `watch`) unsubscribes it.
    beats.abort();
    watch.abort();
    reply
}

/// Turns the attempt's cancel messages, its budget running out (reason `Timeout`, protocol 1.1
/// rule 3) and a drain's timeout into cancellation, until aborted.
async fn watch(
    state: Arc<AttemptState>,
    mut cancels: Option<Subscriber>,
    budget_end: Instant,
    hard_stop: CancellationToken,
) {
    let budget = tokio::time::sleep_until(budget_end);
    tokio::pin!(budget);
    loop {
        tokio::select! {
            message = next_message(&mut cancels) => match message {
                Some(message) => on_cancel_message(&message, &state),
                None => cancels = None,
            },
            () = &mut budget, if !state.is_cancelled() => state.cancel(CancelReason::Timeout),
            () = hard_stop.cancelled(), if !state.is_cancelled() => state.cancel(CancelReason::Draining),
        }
    }
}

fn on_cancel_message(message: &Message, state: &AttemptState) {
    match decode_cancel(&message.payload) {
        // A cancel with another token is for another attempt: SPEC §7 says to ignore it.
        Some(cancel) if cancel.attempt_token == state.attempt_token() => {
            state.cancel(cancel.reason)
        }
        Some(_) => debug!("jetbridge: cancel for another attempt ignored"),
        None => debug!("jetbridge: invalid cancel ignored"),
    }
}

fn reply_for(outcome: Result<Result<Output, HandlerError>, JoinError>) -> Reply {
    match outcome {
        Ok(Ok(output)) => Reply::Ok(output),
        Ok(Err(error)) => error.into_reply(),
        Err(err) => {
            let why = if err.is_panic() {
                format!(
                    "handler panicked: {}",
                    panic_text(err.into_panic().as_ref())
                )
            } else {
                "handler task was aborted".to_owned()
            };
            warn!("jetbridge: {why}");
            HandlerError::retry(error_code::HANDLER_ERROR, why).into_reply()
        }
    }
}

/// A duration from the request for a timer, capped so that adding it to now cannot overflow
/// whatever a request says; a year is forever for an attempt.
fn timer_millis(ms: u64) -> Duration {
    Duration::from_millis(ms.min(YEAR_MS))
}

/// The next message of an optional subscription; never completes without one.
async fn next_message(subscriber: &mut Option<Subscriber>) -> Option<Message> {
    match subscriber {
        Some(subscriber) => subscriber.next().await,
        None => pending().await,
    }
}

/// The reply to send and its encoding: `reply` itself, or a `result_too_large` terminate when it
/// would not fit the server's `max_payload` (SPEC §8). Sizes are counted as the NATS client
/// counts them.
pub(crate) fn fit(
    reply: Reply,
    attempt_token: Option<&str>,
    max_payload: usize,
) -> (Reply, EncodedReply) {
    let encoded = reply.encode(attempt_token);
    let size = encoded.body.len() + headers_wire_len(&encoded.headers);
    if size <= max_payload {
        return (reply, encoded);
    }
    let error = ErrorBody::new(
        error_code::RESULT_TOO_LARGE,
        format!("the reply would be {size} bytes; the server allows {max_payload}"),
    );
    let too_large = Reply::Terminate { error };
    let encoded = too_large.encode(attempt_token);
    (too_large, encoded)
}

/// `NATS/1.0\r\n`, each `Name: value\r\n`, then `\r\n`; nothing at all without headers.
fn headers_wire_len(headers: &[(&str, String)]) -> usize {
    if headers.is_empty() {
        return 0;
    }
    let lines: usize = headers
        .iter()
        .map(|(name, value)| name.len() + 2 + value.len() + 2)
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Payload;

    fn encoded_len(reply: &EncodedReply) -> usize {
        reply.body.len() + headers_wire_len(&reply.headers)
    }

    #[test]
    fn results_that_fit_are_kept() {
        let reply = Reply::Ok(Payload::bytes(vec![b'a'; 100], "application/octet-stream"));
        let (sent, encoded) = fit(reply.clone(), Some("a1B2c3D4e5F6g7H8"), 1 << 20);
        assert_eq!(sent, reply);
        assert_eq!(encoded, reply.encode(Some("a1B2c3D4e5F6g7H8")));
    }

    #[test]
    fn results_over_max_payload_become_result_too_large() {
        let reply = Reply::Ok(Payload::bytes(vec![b'a'; 1000], "application/octet-stream"));
        let (sent, encoded) = fit(reply, Some("a1B2c3D4e5F6g7H8"), 1000);
        assert!(matches!(sent, Reply::Terminate { .. }));
        let body: serde_json::Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(body["status"], "terminate");
        assert_eq!(body["error"]["code"], "result_too_large");
        assert_eq!(body["attempt_token"], "a1B2c3D4e5F6g7H8");
        assert!(encoded_len(&encoded) <= 1000);
    }

    #[test]
    fn panics_become_handler_error_retries() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcome = runtime.block_on(async {
            tokio::spawn(async { panic!("boom") as Result<Output, HandlerError> }).await
        });
        let Reply::Retry {
            error,
            retry_after_ms,
        } = reply_for(outcome)
        else {
            panic!("expected a retry");
        };
        assert_eq!(error.code, "handler_error");
        assert!(error.message.contains("boom"), "{}", error.message);
        assert_eq!(retry_after_ms, None);
    }
}
