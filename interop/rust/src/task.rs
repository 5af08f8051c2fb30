//! [`Task`]: one attempt as a handler sees it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use async_nats::RequestErrorKind;

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
    /// Zero when the dispatcher wants no heartbeats.
    heartbeat_interval: Duration,
    /// Protocol 1.1 `heartbeat_ack`: heartbeats are requests, and the attempt fences itself
    /// when the dispatcher stops acknowledging them.
    heartbeat_ack: bool,
    token: CancellationToken,
    /// Cancelled when the dispatcher no longer reads heartbeats: on any cancel but a drain's.
    beats_done: CancellationToken,
    reason: OnceLock<CancelReason>,
    /// Keeps at most one heartbeat request outstanding.
    sending: tokio::sync::Mutex<()>,
    /// The send time of the newest acknowledged heartbeat; the receipt time at first.
    acked_at: Mutex<Instant>,
}

/// The first heartbeat is due at most this long after receipt (SPEC §5.1).
pub const FIRST_HEARTBEAT_DELAY: Duration = Duration::from_millis(250);

/// Why a heartbeat fenced the attempt, when it did.
const NO_RESPONDERS: &str =
    "heartbeat had no responders: the dispatcher no longer runs this attempt";
const NOT_ACKNOWLEDGED: &str = "no heartbeat acknowledged within the heartbeat timeout";
const LATE_NOT_ACKNOWLEDGED: &str =
    "late request: its heartbeat was not acknowledged within the heartbeat interval";

/// Whether a request received at `received` came more than the heartbeat timeout
/// (`3 × interval`) after it was sent, at `attempt_deadline − budget_ms` (SPEC §5.2), by the
/// wall clock: clock skew only moves the threshold.
pub(crate) fn is_late(
    received: SystemTime,
    attempt_deadline: SystemTime,
    budget_ms: u64,
    interval: Duration,
) -> bool {
    if interval.is_zero() {
        return false;
    }
    let Some(sent) = attempt_deadline.checked_sub(Duration::from_millis(budget_ms.min(YEAR_MS)))
    else {
        return false;
    };
    received
        .duration_since(sent)
        .is_ok_and(|since| since > 3 * interval)
}

impl AttemptState {
    pub(crate) fn new(
        client: async_nats::Client,
        request: &TaskRequest,
        received: Instant,
    ) -> Self {
        Self {
            client,
            task_id: request.task_id.clone(),
            attempt_token: request.attempt_token.clone(),
            heartbeat_subject: request.heartbeat_subject.clone(),
            heartbeat_interval: Duration::from_millis(request.heartbeat_interval_ms.min(YEAR_MS)),
            heartbeat_ack: request.heartbeat_ack,
            token: CancellationToken::new(),
            beats_done: CancellationToken::new(),
            reason: OnceLock::new(),
            sending: tokio::sync::Mutex::new(()),
            acked_at: Mutex::new(received),
        }
    }

    /// Cancels the attempt; the first reason given is the one the handler sees.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        // Set before cancelling, so a handler woken by the token always finds a reason.
        let _ = self.reason.set(reason);
        if reason != CancelReason::Draining {
            self.beats_done.cancel();
        }
        self.token.cancel();
    }

    /// Fences the attempt (protocol 1.1 rule 2): the dispatcher has let it go, so it is
    /// cancelled as the dispatcher's cancel would: with reason lost.
    pub(crate) fn fence(&self, why: &str) {
        tracing::warn!(task_id = %self.task_id, why, "jetbridge: attempt fenced");
        self.cancel(CancelReason::Lost);
    }

    /// Completes once heartbeats are no longer read.
    pub(crate) async fn beats_done(&self) {
        self.beats_done.cancelled().await;
    }

    /// When the attempt fences itself unless a heartbeat is acknowledged before.
    pub(crate) fn fence_at(&self) -> Instant {
        *self.acked_at.lock().expect("acked_at lock") + 3 * self.heartbeat_interval
    }

    /// Completes once the attempt is cancelled.
    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
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

    /// Sends a heartbeat with progress, as [`Task::heartbeat`] does: under `heartbeat_ack` it
    /// waits its turn while another heartbeat is outstanding.
    pub(crate) async fn heartbeat(
        &self,
        progress: Option<f64>,
        message: Option<&str>,
    ) -> Result<(), Error> {
        self.send_heartbeat(progress, message, false)
            .await
            .map(|_acked| ())
    }

    /// SPEC §5.2, late requests: under `heartbeat_ack`, a request received (at `received`, by
    /// this machine's wall clock) more than the heartbeat timeout after it was sent may have
    /// been given up already, its next attempt running elsewhere (say, this process was paused
    /// with it in its socket). Completes once a heartbeat sent at once is acknowledged, or with
    /// the attempt fenced: no responders, or no ack within one interval. Sends nothing for a
    /// request that is not late or has no acks.
    pub(crate) async fn confirm_late(&self, request: &TaskRequest, received: SystemTime) {
        if !self.heartbeat_ack
            || !is_late(
                received,
                request.attempt_deadline,
                request.budget_ms,
                self.heartbeat_interval,
            )
        {
            return;
        }
        match self.send_heartbeat(None, None, false).await {
            Ok(true) | Err(Error::Lost) => {}
            Ok(false) => self.fence(LATE_NOT_ACKNOWLEDGED),
            Err(err) => self.fence(&format!("late request: its heartbeat was not sent: {err}")),
        }
    }

    /// Sends one heartbeat: a publish for a 1.0 dispatcher; under `heartbeat_ack` a request
    /// that waits for the ack at most one interval (and never past the fencing time). A
    /// periodic heartbeat due while another is outstanding is skipped (SPEC §5.2). Returns
    /// [`Error::Lost`] once the attempt is fenced, otherwise whether the heartbeat was
    /// acknowledged.
    async fn send_heartbeat(
        &self,
        progress: Option<f64>,
        message: Option<&str>,
        periodic: bool,
    ) -> Result<bool, Error> {
        let body = encode_heartbeat(&self.task_id, &self.attempt_token, progress, message)?;
        if !self.heartbeat_ack {
            return self
                .client
                .publish(self.heartbeat_subject.clone(), body.into())
                .await
                .map(|()| false)
                .map_err(nats);
        }
        let _one = if periodic {
            match self.sending.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(false),
            }
        } else {
            self.sending.lock().await
        };
        let sent = Instant::now();
        let wait = self
            .heartbeat_interval
            .min(self.fence_at().saturating_duration_since(sent));
        if wait.is_zero() {
            self.fence(NOT_ACKNOWLEDGED);
            return Err(Error::Lost);
        }
        let request = self
            .client
            .request(self.heartbeat_subject.clone(), body.into());
        match tokio::time::timeout(wait, request).await {
            Ok(Ok(_)) => {
                let mut acked_at = self.acked_at.lock().expect("acked_at lock");
                *acked_at = (*acked_at).max(sent);
                Ok(true)
            }
            Ok(Err(err)) if err.kind() == RequestErrorKind::NoResponders => {
                self.fence(NO_RESPONDERS);
                Err(Error::Lost)
            }
            // Unacknowledged: the fencing time, not this heartbeat, decides.
            Ok(Err(err)) if err.kind() == RequestErrorKind::TimedOut => Ok(false),
            Err(_elapsed) => Ok(false),
            Ok(Err(err)) => Err(nats(err)),
        }
    }

    /// Heartbeats from receipt: the first `min(250 ms, interval)` after it (an attempt that
    /// replies sooner sends none, SPEC §5.1), then every interval; fences the attempt when the
    /// heartbeat timeout passes without an ack, until the dispatcher no longer reads heartbeats.
    pub(crate) async fn keep_alive(self: Arc<Self>) {
        if self.heartbeat_interval.is_zero() {
            return;
        }
        let received = *self.acked_at.lock().expect("acked_at lock");
        let mut next = received + FIRST_HEARTBEAT_DELAY.min(self.heartbeat_interval);
        loop {
            let wake = if self.heartbeat_ack {
                next.min(self.fence_at())
            } else {
                next
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.beats_done() => return,
            }
            let now = Instant::now();
            if self.heartbeat_ack && now >= self.fence_at() {
                self.fence(NOT_ACKNOWLEDGED);
                return;
            }
            if now < next {
                continue;
            }
            next = now + self.heartbeat_interval;
            tokio::select! {
                sent = self.send_heartbeat(None, None, true) => match sent {
                    Err(Error::Lost) => return,
                    Err(err) => tracing::warn!(task_id = %self.task_id, error = %err, "jetbridge: heartbeat not sent"),
                    Ok(_acked) => {}
                },
                () = self.beats_done() => return,
            }
        }
    }
}

/// A year in milliseconds: longer than any attempt, and safe to add to an instant.
pub(crate) const YEAR_MS: u64 = 365 * 24 * 60 * 60 * 1000;

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

    /// The attempt's shared state, for the crate's middleware.
    pub(crate) fn state(&self) -> Arc<AttemptState> {
        self.attempt.clone()
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
    /// report progress, which the dispatcher stores on the task. Returns [`Error::Lost`] when
    /// the dispatcher no longer runs this attempt.
    pub async fn heartbeat(
        &self,
        progress: Option<f64>,
        message: Option<&str>,
    ) -> Result<(), Error> {
        self.attempt.heartbeat(progress, message).await
    }

    /// Cancelled when the dispatcher cancels the attempt, when the budget runs out (reason
    /// `Timeout`), when the attempt fences itself because the dispatcher stopped acknowledging
    /// its heartbeats (reason `Lost`), or when the service drains and its drain timeout has
    /// passed. Clone it to hand to sub-tasks.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_means_received_over_three_intervals_after_sent() {
        let now = SystemTime::now();
        // Sent 20 s ago with a 30 s budget.
        let deadline = now + Duration::from_secs(10);
        assert!(is_late(now, deadline, 30_000, Duration::from_secs(6)));
        assert!(!is_late(now, deadline, 30_000, Duration::from_secs(7)));
        assert!(!is_late(now, deadline, 30_000, Duration::ZERO));
        // Sent "in the future" by this clock: not late.
        assert!(!is_late(
            now,
            now + Duration::from_secs(60),
            30_000,
            Duration::from_secs(1)
        ));
    }
}
