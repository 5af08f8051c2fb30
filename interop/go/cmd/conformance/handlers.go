package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/nats-io/nats.go"
)

// handlers implements the task types of the conformance contract.
type handlers struct {
	nc       *nats.Conn
	instance string
}

func (h *handlers) all() map[string]jetbridge.HandlerFunc {
	return map[string]jetbridge.HandlerFunc{
		"conf:echo":        h.echo,
		"conf:info":        h.info,
		"conf:fail":        h.fail,
		"conf:retry_after": h.retryAfter,
		"conf:terminate":   h.terminate,
		"conf:sleep":       h.sleep,
		"conf:big":         h.big,
		"conf:panic":       h.panics,
		"conf:mw":          h.mwHandler,
		"conf:mw_blocked":  h.mwHandler,
	}
}

// announced publishes the started event before running fn.
func (h *handlers) announced(fn jetbridge.HandlerFunc) jetbridge.HandlerFunc {
	return func(ctx context.Context, t *jetbridge.Task) (any, error) {
		publish(h.nc, event{Event: "started", TaskID: t.ID, Attempt: t.Attempt, Instance: h.instance})
		return fn(ctx, t)
	}
}

// echo returns JSON as the same JSON and bytes as the same bytes.
func (h *handlers) echo(_ context.Context, t *jetbridge.Task) (any, error) {
	if t.Binary {
		return jetbridge.Bytes{Data: t.Payload, ContentType: t.ContentType}, nil
	}
	return json.RawMessage(t.Payload), nil
}

func (h *handlers) info(_ context.Context, t *jetbridge.Task) (any, error) {
	return map[string]any{
		"instance":     h.instance,
		"lang":         "go",
		"task_id":      t.ID,
		"attempt":      t.Attempt,
		"max_attempts": t.MaxAttempts,
		"queue":        t.Queue,
		"budget_ms":    t.Budget.Milliseconds(),
	}, nil
}

type attemptResult struct {
	Attempt int `json:"attempt"`
}

func (h *handlers) fail(_ context.Context, t *jetbridge.Task) (any, error) {
	var in struct{ Times int }
	if err := t.Decode(&in); err != nil {
		return nil, err
	}
	if t.Attempt <= in.Times {
		return nil, jetbridge.Retry("planned_failure", fmt.Sprintf("failure %d of %d", t.Attempt, in.Times), 0)
	}
	return attemptResult{t.Attempt}, nil
}

func (h *handlers) retryAfter(_ context.Context, t *jetbridge.Task) (any, error) {
	var in struct{ Ms int64 }
	if err := t.Decode(&in); err != nil {
		return nil, err
	}
	if t.Attempt == 1 {
		return nil, jetbridge.Retry("planned_failure", fmt.Sprintf("retry after %d ms", in.Ms), time.Duration(in.Ms)*time.Millisecond)
	}
	return attemptResult{t.Attempt}, nil
}

func (h *handlers) terminate(_ context.Context, t *jetbridge.Task) (any, error) {
	var in struct{ Message string }
	if err := t.Decode(&in); err != nil {
		return nil, err
	}
	return nil, jetbridge.Terminate("planned_terminate", in.Message)
}

// sleep works for ms in steps, reporting progress after each, and stops
// on cancel unless told to ignore it.
func (h *handlers) sleep(ctx context.Context, t *jetbridge.Task) (any, error) {
	var in struct {
		Ms           int64 `json:"ms"`
		Steps        int   `json:"steps"`
		OnlyAttempt  *int  `json:"only_attempt"`
		IgnoreCancel bool  `json:"ignore_cancel"`
	}
	if err := t.Decode(&in); err != nil {
		return nil, err
	}
	type slept struct {
		SleptMs int64 `json:"slept_ms"`
		Attempt int   `json:"attempt"`
	}
	if in.OnlyAttempt != nil && *in.OnlyAttempt != t.Attempt {
		return slept{0, t.Attempt}, nil
	}
	steps := max(in.Steps, 1)
	step := time.Duration(in.Ms) * time.Millisecond / time.Duration(steps)
	work := ctx
	if in.IgnoreCancel {
		work = context.WithoutCancel(ctx) // keeps sleeping and heartbeating
	}
	for i := 1; i <= steps; i++ {
		timer := time.NewTimer(step)
		select {
		case <-timer.C:
		case <-work.Done():
			timer.Stop()
			return nil, h.cancelled(ctx, t)
		}
		_ = t.Heartbeat(work, new(float64(i)/float64(steps)), fmt.Sprintf("step %d of %d", i, steps))
	}
	return slept{in.Ms, t.Attempt}, nil
}

// cancelled publishes the cancelled event when a cancel (or the attempt
// deadline, which the dispatcher cancels at) stopped the attempt, and
// returns the reply nobody will read any more.
func (h *handlers) cancelled(ctx context.Context, t *jetbridge.Task) error {
	var ce *jetbridge.CancelError
	if errors.As(context.Cause(ctx), &ce) {
		publish(h.nc, event{Event: "cancelled", TaskID: t.ID, Attempt: t.Attempt, Instance: h.instance, Reason: ce.Reason})
	}
	return jetbridge.Retry("cancelled", context.Cause(ctx).Error(), 0)
}

func (h *handlers) big(_ context.Context, t *jetbridge.Task) (any, error) {
	var in struct{ Bytes int }
	if err := t.Decode(&in); err != nil {
		return nil, err
	}
	if in.Bytes < 0 {
		return nil, jetbridge.Terminate(jetbridge.CodeBadPayload, "bytes is negative")
	}
	return jetbridge.Bytes{Data: bytes.Repeat([]byte("a"), in.Bytes), ContentType: "application/octet-stream"}, nil
}

func (h *handlers) panics(context.Context, *jetbridge.Task) (any, error) {
	panic("conf:panic: a planned panic")
}
