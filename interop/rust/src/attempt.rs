//! Serving one request: decide, run the handler under supervision, reply once.

use std::any::Any;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::Request;
use async_nats::{HeaderMap, Message, Subscriber};
use futures::StreamExt;
use tokio::task::JoinError;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, warn};

use crate::output::{HandlerError, Output};
use crate::protocol::{
    CancelReason, EncodedReply, ErrorBody, Reply, TaskRequest, decode_cancel, decode_request,
    error_code,
};
use crate::service::{Handler, Shared};
use crate::task::{AttemptState, Task};

/// Answers one request; never fails, since there is nobody to report to but the log.
pub(crate) async fn serve(request: Request, shared: Arc<Shared>) {
    let stats = shared.stats.get(request.message.subject.as_str());
    let running = stats.map(|stats| stats.start());
    let (reply, token) = answer(&request.message.payload, &shared).await;
    let (reply, encoded) = fit(reply, token.as_deref(), shared.client.max_payload());
    drop(running);
    if let Some(stats) = stats {
        stats.record(&reply);
    }
    drop(reply); // a large result now lives on in `encoded` only
    let mut headers = HeaderMap::new();
    for (name, value) in &encoded.headers {
        headers.insert(*name, value.as_str());
    }
    if let Err(err) = request
        .respond_with_headers(Ok(encoded.body.into()), headers)
        .await
    {
        warn!(subject = %request.message.subject, error = %err, "jetbridge: reply not sent");
    }
}

/// The reply for a request body, and the attempt token to echo in it.
async fn answer(body: &[u8], shared: &Shared) -> (Reply, Option<String>) {
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
    (supervise(handler, request, shared).await, token)
}

/// Runs the handler in its own task, so that a panic becomes a reply rather than a lost
/// attempt, while this task listens for cancels, watches the budget and sends heartbeats.
async fn supervise(handler: &Handler, request: TaskRequest, shared: &Shared) -> Reply {
    let budget_end = Instant::now() + timer_millis(request.budget_ms);
    let heartbeat_every = timer_millis(request.heartbeat_interval_ms);
    let state = Arc::new(AttemptState::new(shared.client.clone(), &request));

    // Subscribed before the handler starts: whatever the handler publishes (a heartbeat, an
    // event) reaches the server after this subscription, so a dispatcher that reacts to it
    // with a cancel is heard.
    let mut cancels = match shared
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
    let mut heartbeats = (!heartbeat_every.is_zero()).then(|| {
        let mut interval =
            tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    });
    let budget = tokio::time::sleep_until(budget_end);
    tokio::pin!(budget);

    let mut run = tokio::spawn(handler(Task::new(request, budget_end, state.clone())));
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            message = next_message(&mut cancels) => match message {
                Some(message) => on_cancel_message(&message, &state),
                None => cancels = None,
            },
            () = &mut budget, if !state.is_cancelled() => state.cancel(CancelReason::BudgetExhausted),
            () = shared.hard_stop.cancelled(), if !state.is_cancelled() => state.cancel(CancelReason::Draining),
            () = tick(&mut heartbeats), if state.dispatcher_waiting() => {
                if let Err(err) = state.heartbeat(None, None).await {
                    warn!(error = %err, "jetbridge: heartbeat not sent");
                }
            }
        }
    };
    if let Some(mut cancels) = cancels {
        // Best effort: the subscription dies with the connection anyway.
        let _ = cancels.unsubscribe().await;
    }
    reply_for(outcome)
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

/// The text a panic was raised with, when it was raised with text.
fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

/// A duration from the request for a timer, capped so that adding it to now cannot overflow
/// whatever a request says; a year is forever for an attempt.
fn timer_millis(ms: u64) -> Duration {
    const YEAR_MS: u64 = 365 * 24 * 60 * 60 * 1000;
    Duration::from_millis(ms.min(YEAR_MS))
}

/// The next message of an optional subscription; never completes without one.
async fn next_message(subscriber: &mut Option<Subscriber>) -> Option<Message> {
    match subscriber {
        Some(subscriber) => subscriber.next().await,
        None => pending().await,
    }
}

/// The next tick of an optional interval; never completes without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
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
