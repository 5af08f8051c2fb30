package jetbridge

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// endpointHandler is the micro handler of one task type's endpoint. nats.go
// micro calls it serially on the endpoint's subscription goroutine, so it
// only decides: it answers rejections at once and hands each accepted
// attempt to a goroutine of its own, which waits for a concurrency slot.
// Not waiting here keeps each request's arrival time, which its deadline
// counts from, true.
func (s *Service) endpointHandler(c *counters) micro.HandlerFunc {
	return func(req micro.Request) {
		received := time.Now()
		r, token, reject := decodeRequest(req.Data())
		var h HandlerFunc
		if reject == nil {
			if h = s.handler(r.task.Type); h == nil {
				reject = Terminate(CodeUnknownTaskType, "no handler for task type "+r.task.Type)
			}
		}
		if reject != nil {
			s.reject(req, errorReply(token, reject))
			return
		}
		s.inflight.Add(1)
		go func() {
			defer s.inflight.Done()
			c.record(s.send(req.Reply(), r.token, s.run(r, h, received, c)))
		}()
	}
}

// reject answers through micro's Error so that the endpoint's num_errors
// counts it. (Attempt replies are sent from other goroutines, where micro's
// bookkeeping cannot see them; see endpointStats.)
func (s *Service) reject(req micro.Request, out outgoing) {
	err := req.Error(out.header.Get(micro.ErrorCodeHeader), out.header.Get(micro.ErrorHeader),
		out.body, micro.WithHeaders(micro.Headers(out.header)))
	if err != nil {
		s.log.Warn("jetbridge: rejection not sent", "subject", req.Subject(), "error", err)
	}
}

// run runs one attempt once a concurrency slot is free, and returns its
// reply.
func (s *Service) run(r *taskRequest, h HandlerFunc, received time.Time, c *counters) outgoing {
	ctx, cancel := context.WithCancelCause(s.attempts)
	defer cancel(nil)
	ctx, stop := context.WithDeadlineCause(ctx, received.Add(r.task.Budget), deadlineCause(&r.task))
	defer stop()

	// Watch for cancels from the start: a task may be cancelled while it
	// waits for a slot.
	unwatch := s.watchCancel(r, cancel)
	defer unwatch()
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
	t.beat = func(progress *float64, message string) error { return s.heartbeat(r, progress, message) }
	stopBeats := s.keepAlive(ctx, r)
	result, err := call(ctx, h, &t)
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

// deadlineCause is the cause of an attempt's context when its deadline
// passes here: the cancel the dispatcher sends at that moment (SPEC §7),
// which may not have arrived yet. The task's own deadline is the reason
// when it is what limited the attempt.
func deadlineCause(t *Task) error {
	reason := "timeout"
	if !t.Deadline.IsZero() && !t.Deadline.After(t.AttemptDeadline) {
		reason = "deadline"
	}
	return &CancelError{Reason: reason, Message: "attempt deadline passed"}
}

// isCancellation reports whether err is the handler giving up because ctx
// ended, which is worth a clearer reply than handler_error.
func isCancellation(ctx context.Context, err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Cause(ctx))
}

// panicError carries a handler's panic to the reply as a handler_error.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// call runs the handler, turning a panic into an error so that one bad
// task cannot take the service down.
func call(ctx context.Context, h HandlerFunc, t *Task) (result any, err error) {
	defer func() {
		if v := recover(); v != nil {
			result, err = nil, &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return h(ctx, t)
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

// keepAlive publishes a bare heartbeat every heartbeat interval until stop
// is called or ctx ends (the dispatcher ignores heartbeats after that).
func (s *Service) keepAlive(ctx context.Context, r *taskRequest) (stop func()) {
	if r.heartbeatInterval <= 0 {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(r.heartbeatInterval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if err := s.heartbeat(r, nil, ""); err != nil {
					s.log.Warn("jetbridge: heartbeat not sent", "task_id", r.task.ID, "error", err)
				}
			case <-ctx.Done():
				return
			case <-quit:
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

// heartbeat publishes one heartbeat for the attempt.
func (s *Service) heartbeat(r *taskRequest, progress *float64, message string) error {
	body, err := encodeHeartbeat(r.task.ID, r.token, progress, message)
	if err != nil {
		return err
	}
	return s.nc.Publish(r.heartbeatSubject, body)
}

// send publishes an attempt's reply, replaced by result_too_large when it
// would not fit the server's max_payload, and returns the status it sent.
func (s *Service) send(replyTo, token string, out outgoing) (status string) {
	if replyTo == "" {
		s.log.Warn("jetbridge: request had no reply subject; reply dropped")
		return out.status
	}
	maxPayload := s.nc.MaxPayload()
	out = fit(out, token, maxPayload)
	err := s.nc.PublishMsg(&nats.Msg{Subject: replyTo, Header: out.header, Data: out.body})
	if errors.Is(err, nats.ErrMaxPayload) {
		// fit's size estimate and the client disagreed: still answer.
		out = errorReply(token, Terminate(CodeResultTooLarge, fmt.Sprintf("reply exceeds the server's max_payload of %d bytes", maxPayload)))
		err = s.nc.PublishMsg(&nats.Msg{Subject: replyTo, Header: out.header, Data: out.body})
	}
	if err != nil {
		s.log.Error("jetbridge: reply not sent", "subject", replyTo, "error", err)
	}
	return out.status
}
