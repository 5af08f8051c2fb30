package jetbridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// endpointHandler handles the requests of one task type's endpoint. The
// subscription calls it serially, so it only decides: it answers rejections
// at once and hands each accepted attempt to a goroutine of its own, which
// heartbeats from receipt (protocol 1.1 rule 1) and waits for a
// concurrency slot. Not waiting here keeps each request's arrival time,
// which its deadline and heartbeat clock count from, true.
func (s *Service) endpointHandler(c *counters) func(*microEndpoint, *nats.Msg) {
	return func(e *microEndpoint, msg *nats.Msg) {
		received := time.Now()
		r, token, reject := decodeRequest(msg.Data)
		var h HandlerFunc
		if reject == nil {
			if h = s.handler(r.task.Type); h == nil {
				reject = Terminate(CodeUnknownTaskType, "no handler for task type "+r.task.Type)
			}
		}
		if reject != nil {
			out := s.fit(errorReply(token, reject), token)
			s.micro.record(e, time.Since(received), out.failure())
			s.send(msg.Reply, token, out)
			return
		}
		s.inflight.Add(1)
		go func() {
			defer s.inflight.Done()
			out := s.fit(s.run(r, h, received, c), r.token)
			// Counted before the reply goes out, so that whoever has the
			// reply finds it in the stats.
			c.record(out.status)
			s.micro.record(e, time.Since(received), out.failure())
			s.send(msg.Reply, r.token, out)
		}()
	}
}

// run runs one attempt once a concurrency slot is free, and returns its
// reply.
func (s *Service) run(r *taskRequest, h HandlerFunc, received time.Time, c *counters) outgoing {
	ctx, cancel := context.WithCancelCause(s.attempts)
	defer cancel(nil)
	ctx, stop := context.WithDeadlineCause(ctx, received.Add(r.task.Budget), budgetCause)
	defer stop()

	// Watch for cancels and heartbeat from the start: a task may be
	// cancelled, and must be kept alive, while it waits for a slot.
	unwatch := s.watchCancel(r, cancel)
	defer unwatch()
	beats := newHeartbeater(s, r, received, cancel)
	// A late request waits for an acknowledged heartbeat; if the
	// dispatcher let it go, ctx is fenced and it never starts.
	beats.confirmLate(ctx)
	stopBeats := beats.keepAlive(ctx)
	defer stopBeats()
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		// Its budget ran out, or it was cancelled, before it could start:
		// running it now could only produce a stale reply.
		return errorReply(r.token, Retry(CodeCancelled, "not started: "+context.Cause(ctx).Error(), 0))
	}
	c.running.Add(1)
	defer c.running.Add(-1)

	t := r.task
	t.beat = beats.beat
	result, err := s.chain(t.Type, h)(ctx, &t)
	stopBeats()

	var p *panicError
	if errors.As(err, &p) {
		s.log.Error("jetbridge: handler panicked", "task_type", t.Type, "task_id", t.ID, "panic", p.value, "stack", string(p.stack))
	}
	if err != nil && ctx.Err() != nil && isCancellation(ctx, err) {
		err = Retry(CodeCancelled, context.Cause(ctx).Error(), 0)
	}
	return encodeReply(r.token, result, err)
}

// budgetCause is the cause of an attempt's context when its budget runs
// out here: a cancel with reason timeout (SPEC §3.3), which is also what
// the dispatcher sends when attempt_deadline passes.
var budgetCause = &CancelError{Reason: "timeout", Message: "the attempt's budget_ms has passed"}

// isCancellation reports whether err is the handler giving up because ctx
// ended, which is worth a clearer reply than handler_error.
func isCancellation(ctx context.Context, err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Cause(ctx))
}

// watchCancel subscribes to the attempt's cancel subject until unwatch is
// called, and turns a valid cancel for this attempt into cancellation of
// its context.
func (s *Service) watchCancel(r *taskRequest, cancel context.CancelCauseFunc) (unwatch func()) {
	sub, err := s.nc.Subscribe(r.cancelSubject, func(m *nats.Msg) {
		c, err := parseCancel(m.Data, r.token)
		if err != nil {
			s.log.Debug("jetbridge: ignoring message on cancel subject", "subject", m.Subject, "task_id", r.task.ID, "error", err)
			return
		}
		cancel(c)
	})
	if err != nil {
		s.log.Warn("jetbridge: cannot watch for cancels", "subject", r.cancelSubject, "task_id", r.task.ID, "error", err)
		return func() {}
	}
	return func() { _ = sub.Unsubscribe() }
}

// fit replaces a reply by result_too_large when it would not fit the
// server's max_payload.
func (s *Service) fit(out outgoing, token string) outgoing {
	return fit(out, token, s.nc.MaxPayload())
}

// send publishes a reply.
func (s *Service) send(replyTo, token string, out outgoing) {
	if replyTo == "" {
		s.log.Warn("jetbridge: request had no reply subject; reply dropped")
		return
	}
	err := s.nc.PublishMsg(&nats.Msg{Subject: replyTo, Header: out.header, Data: out.body})
	if errors.Is(err, nats.ErrMaxPayload) {
		// fit's size estimate and the client disagreed: still answer.
		out = errorReply(token, Terminate(CodeResultTooLarge, fmt.Sprintf("reply exceeds the server's max_payload of %d bytes", s.nc.MaxPayload())))
		err = s.nc.PublishMsg(&nats.Msg{Subject: replyTo, Header: out.header, Data: out.body})
	}
	if err != nil {
		s.log.Error("jetbridge: reply not sent", "subject", replyTo, "error", err)
	}
}
