package jetbridge

import (
	"context"
	"encoding/json"
	"time"
)

// Task is one attempt of a task, as the handler sees it.
//
// A Task made by hand (in a handler's unit test, say) works too: its
// Heartbeat does nothing and returns nil.
type Task struct {
	// ID is stable across attempts: use it as an idempotency key.
	ID string
	// Type is the task type, e.g. "email:new".
	Type string
	// Queue is the work queue the task came from.
	Queue string
	// Attempt counts from 1; MaxAttempts is 0 when there is no limit.
	Attempt, MaxAttempts int
	// Created is when the task was enqueued.
	Created time.Time
	// Deadline is the task's overall deadline; zero when it has none.
	Deadline time.Time
	// AttemptDeadline is when the dispatcher stops waiting for this attempt
	// (by the dispatcher's clock).
	AttemptDeadline time.Time
	// Budget is the time this attempt had left when it was sent. The
	// handler's context expires Budget after the request arrived, which
	// is immune to clock skew between the machines.
	Budget time.Duration
	// Payload is the task's input: JSON text, or the bytes themselves
	// when Binary is set.
	Payload []byte
	// Binary reports that the producer gave bytes rather than JSON.
	Binary bool
	// ContentType is application/json for JSON payloads, otherwise what
	// the producer declared.
	ContentType string
	// Traceparent is the W3C trace context, when the dispatcher had one.
	Traceparent string

	// beat publishes a heartbeat for this attempt; nil for a hand-made Task.
	beat func(ctx context.Context, progress *float64, message string) error
}

// Decode unmarshals a JSON payload into v. A payload that is bytes, or that
// does not fit v, is the producer's mistake and no retry can fix it, so the
// error is a [Terminate] with code [CodeBadPayload]: a handler can return it
// as is.
func (t *Task) Decode(v any) error {
	if t.Binary {
		return Terminate(CodeBadPayload, "payload is "+t.ContentType+" bytes, not JSON")
	}
	if err := json.Unmarshal(t.Payload, v); err != nil {
		return Terminate(CodeBadPayload, "payload does not decode: "+err.Error())
	}
	return nil
}

// Heartbeat tells the dispatcher the attempt is alive and, optionally, how
// far it got: progress (nil for none) is a fraction from 0 to 1, message
// (empty for none) says what it is doing and is cut to 1024 characters.
// The service already sends bare heartbeats on its own, so call this to
// report progress. It returns ctx's error without sending once ctx is done,
// because the dispatcher ignores heartbeats of a cancelled attempt.
//
//	t.Heartbeat(ctx, new(0.4), "resizing")
func (t *Task) Heartbeat(ctx context.Context, progress *float64, message string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.beat == nil {
		return nil
	}
	return t.beat(ctx, progress, message)
}
