//! [`Task`]: one attempt as a handler sees it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::error::{Error, nats};
use crate::output::HandlerError;
use crate::protocol::error_code::BAD_PAYLOAD;
use crate::protocol::{CancelReason, Payload, TaskRequest, encode_heartbeat};

/// One attempt of a task, handed to the handler registered for its type.
///
/// Besides the task's data it carries the attempt's cancellation: watch
/// [`Task::cancellation_token`] (or await [`Task::cancelled`]) in long work, since the
/// dispatcher stops waiting for a cancelled attempt and drops its reply.
#[derive(Debug)]
pub struct Task {
    request: TaskRequest,
    budget_end: Instant,
    attempt: Arc<AttemptState>,
}

/// What the running attempt shares with the code that supervises it.
#[derive(Debug)]
pub(crate) struct AttemptState {
    client: async_nats::Client,
    task_id: String,
    attempt_token: String,
    heartbeat_subject: String,
    token: CancellationToken,
    reason: OnceLock<CancelReason>,
}

impl AttemptState {
    pub(crate) fn new(client: async_nats::Client, request: &TaskRequest) -> Self {
        Self {
            client,
            task_id: request.task_id.clone(),
            attempt_token: request.attempt_token.clone(),
            heartbeat_subject: request.heartbeat_subject.clone(),
            token: CancellationToken::new(),
            reason: OnceLock::new(),
        }
    }

    /// Cancels the attempt; the first reason given is the one the handler sees.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        // Set before cancelling, so a handler woken by the token always finds a reason.
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(crate) fn reason(&self) -> Option<CancelReason> {
        self.reason.get().copied()
    }

    pub(crate) fn attempt_token(&self) -> &str {
        &self.attempt_token
    }

    /// Whether the dispatcher still reads this attempt's heartbeats and reply: not after it
    /// cancelled the attempt nor after the budget ran out.
    pub(crate) fn dispatcher_waiting(&self) -> bool {
        matches!(self.reason(), None | Some(CancelReason::Draining))
    }

    pub(crate) async fn heartbeat(
        &self,
        progress: Option<f64>,
        message: Option<&str>,
    ) -> Result<(), Error> {
        let body = encode_heartbeat(&self.task_id, &self.attempt_token, progress, message)?;
        self.client
            .publish(self.heartbeat_subject.clone(), body.into())
            .await
            .map_err(nats)
    }
}

impl Task {
    pub(crate) fn new(
        request: TaskRequest,
        budget_end: Instant,
        attempt: Arc<AttemptState>,
    ) -> Self {
        Self {
            request,
            budget_end,
            attempt,
        }
    }

    /// The task id: stable across attempts, so use it as an idempotency key.
    pub fn id(&self) -> &str {
        &self.request.task_id
    }

    /// The task type this handler was registered for.
    pub fn task_type(&self) -> &str {
        &self.request.task_type
    }

    /// The queue the task came from.
    pub fn queue(&self) -> &str {
        &self.request.queue
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u64 {
        self.request.attempt
    }

    /// The most attempts the task gets; 0 means no limit.
    pub fn max_attempts(&self) -> u64 {
        self.request.max_attempts
    }

    /// A token unique to this attempt, for logs.
    pub fn attempt_token(&self) -> &str {
        &self.request.attempt_token
    }

    /// When the task was enqueued.
    pub fn created(&self) -> SystemTime {
        self.request.created
    }

    /// The task's overall deadline, if it has one.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.request.deadline
    }

    /// When the dispatcher stops waiting for this attempt, by its clock.
    pub fn attempt_deadline(&self) -> SystemTime {
        self.request.attempt_deadline
    }

    /// The time this attempt had when the request was sent (`budget_ms`). Prefer it, or
    /// [`Task::remaining`], to [`Task::attempt_deadline`]: it does not depend on clock sync.
    pub fn budget(&self) -> Duration {
        Duration::from_millis(self.request.budget_ms)
    }

    /// What is left of the budget now. When it reaches zero the attempt is cancelled.
    pub fn remaining(&self) -> Duration {
        self.budget_end.saturating_duration_since(Instant::now())
    }

    /// The payload: a JSON value or bytes with a content type.
    pub fn payload(&self) -> &Payload {
        &self.request.payload
    }

    /// Takes the payload out, leaving JSON `null`, to avoid copying a large one.
    pub fn take_payload(&mut self) -> Payload {
        std::mem::replace(
            &mut self.request.payload,
            Payload::Json(serde_json::Value::Null),
        )
    }

    /// The payload's content type: `application/json` for JSON payloads.
    pub fn content_type(&self) -> &str {
        &self.request.content_type
    }

    /// The W3C trace context, when the dispatcher sent one.
    pub fn traceparent(&self) -> Option<&str> {
        self.request.traceparent.as_deref()
    }

    /// Deserializes a JSON payload into `T`.
    ///
    /// A payload that does not fit is a bug in the producer that no retry can fix, so the error
    /// is a [`HandlerError::terminate`] with code `bad_payload`, ready to return with `?`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        match &self.request.payload {
            Payload::Json(value) => T::deserialize(value).map_err(|err| {
                HandlerError::terminate(BAD_PAYLOAD, format!("payload does not fit: {err}"))
            }),
            Payload::Bytes { content_type, .. } => Err(HandlerError::terminate(
                BAD_PAYLOAD,
                format!("expected a JSON payload, got {content_type} bytes"),
            )),
        }
    }

    /// Sends a heartbeat now, with optional progress (a fraction from 0 to 1) and message.
    ///
    /// The service already sends bare heartbeats as often as the dispatcher asks; call this to
    /// report progress, which the dispatcher stores on the task.
    pub async fn heartbeat(
        &self,
        progress: Option<f64>,
        message: Option<&str>,
    ) -> Result<(), Error> {
        self.attempt.heartbeat(progress, message).await
    }

    /// Cancelled when the dispatcher cancels the attempt, when the budget runs out, or when the
    /// service drains and its drain timeout has passed. Clone it to hand to sub-tasks.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.attempt.token
    }

    /// Completes when the attempt is cancelled; handy in `tokio::select!`.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.attempt.token.cancelled()
    }

    /// Whether the attempt has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.attempt.token.is_cancelled()
    }

    /// Why the attempt was cancelled, once it has been.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.attempt.reason()
    }
}
