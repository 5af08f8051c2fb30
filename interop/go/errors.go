package jetbridge

import (
	"errors"
	"time"
)

// Error is a failure a handler reports on purpose: it decides whether the
// dispatcher retries the task and what error the task records. Create one
// with [Retry] or [Terminate]; it may be wrapped, since the service finds it
// with errors.As.
type Error struct {
	// Code is a short machine-readable reason, e.g. "smtp_busy".
	Code string
	// Message is for people; it becomes the task's last error.
	Message string
	// Details is any JSON-encodable value stored with the error.
	Details any
	// Terminal ends the task for good instead of retrying it.
	Terminal bool
	// RetryAfter, when positive, replaces the queue's backoff for this
	// retry. It is ignored when Terminal is set.
	RetryAfter time.Duration
}

// Retry reports a failure after which the task may run again. A positive
// retryAfter replaces the queue's backoff; zero keeps it.
func Retry(code, message string, retryAfter time.Duration) *Error {
	return &Error{Code: code, Message: message, RetryAfter: retryAfter}
}

// Terminate reports a failure that no retry can fix: the dispatcher ends the
// task as terminated.
func Terminate(code, message string) *Error {
	return &Error{Code: code, Message: message, Terminal: true}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// CancelError is the cause (see context.Cause) of an attempt's context when
// the attempt was cancelled: by a cancel message from the dispatcher,
// because its budget ran out here before that message arrived (reason
// timeout or deadline), or because the service fenced it when the
// dispatcher stopped acknowledging its heartbeats (reason lost).
type CancelError struct {
	// Reason is the protocol's cancel reason: operator, deadline, timeout,
	// shutdown or lost.
	Reason string
	// Message is the dispatcher's explanation, if it gave one.
	Message string
}

func (e *CancelError) Error() string {
	if e.Message == "" {
		return "attempt cancelled: " + e.Reason
	}
	return "attempt cancelled: " + e.Reason + ": " + e.Message
}

// ErrDraining is the cause of an attempt's context when the service's drain
// timeout ran out before the attempt finished.
var ErrDraining = errors.New("jetbridge: service draining")

// ErrStopped is returned by AddHandler once the service has begun to stop.
var ErrStopped = errors.New("jetbridge: service stopped")
