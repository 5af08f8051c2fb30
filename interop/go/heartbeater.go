package jetbridge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// heartbeater sends one attempt's heartbeats from the moment its request
// arrived (protocol 1.1 rule 1) and, when the dispatcher acknowledges
// heartbeats (heartbeat_ack), fences the attempt once the dispatcher is
// known to have let it go (rule 2): a heartbeat with no responders, or no
// acknowledged heartbeat for three intervals. A fenced attempt is cancelled
// with reason lost, so its handler stops before a new attempt starts
// elsewhere.
type heartbeater struct {
	s        *Service
	r        *taskRequest
	received time.Time
	fence    context.CancelCauseFunc

	// sending keeps at most one heartbeat outstanding.
	sending sync.Mutex
	// ackedAt is the send time of the newest acknowledged heartbeat, as
	// nanoseconds since received (monotonic).
	ackedAt atomic.Int64
}

func newHeartbeater(s *Service, r *taskRequest, received time.Time, fence context.CancelCauseFunc) *heartbeater {
	return &heartbeater{s: s, r: r, received: received, fence: fence}
}

// timeout is how long without an acknowledged heartbeat fences the attempt.
func (h *heartbeater) timeout() time.Duration { return 3 * h.r.heartbeatInterval }

// fenceAt is when the attempt is fenced unless a heartbeat is acknowledged.
func (h *heartbeater) fenceAt() time.Time {
	return h.received.Add(time.Duration(h.ackedAt.Load()) + h.timeout())
}

// lost cancels the attempt as the dispatcher has: with reason lost.
func (h *heartbeater) lost(why string) {
	h.s.log.Warn("jetbridge: attempt fenced", "task_type", h.r.task.Type, "task_id", h.r.task.ID, "why", why)
	h.fence(&CancelError{Reason: "lost", Message: why})
}

// beat sends a heartbeat with progress, as Task.Heartbeat does: under
// heartbeat_ack it waits its turn if another heartbeat is outstanding.
func (h *heartbeater) beat(ctx context.Context, progress *float64, message string) error {
	_, err := h.send(ctx, progress, message, false)
	return err
}

// send sends one heartbeat: a publish for a 1.0 dispatcher, otherwise a
// request that waits for the ack at most one interval (and never past the
// fencing time, nor past ctx). A periodic heartbeat due while another is
// outstanding is skipped (SPEC §5.2). acked reports whether the dispatcher
// acknowledged this heartbeat.
func (h *heartbeater) send(ctx context.Context, progress *float64, message string, periodic bool) (acked bool, err error) {
	body, err := encodeHeartbeat(h.r.task.ID, h.r.token, progress, message)
	if err != nil {
		return false, err
	}
	if !h.r.heartbeatAck {
		return false, h.s.nc.Publish(h.r.heartbeatSubject, body)
	}
	if periodic {
		if !h.sending.TryLock() {
			return false, nil
		}
	} else {
		h.sending.Lock()
	}
	defer h.sending.Unlock()
	sent := time.Now()
	wait := min(h.r.heartbeatInterval, time.Until(h.fenceAt()))
	if wait <= 0 {
		h.lost("no heartbeat acknowledged within the heartbeat timeout")
		return false, ErrAttemptLost
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	_, err = h.s.nc.RequestWithContext(ctx, h.r.heartbeatSubject, body)
	switch {
	case err == nil:
		if d := int64(sent.Sub(h.received)); d > h.ackedAt.Load() {
			h.ackedAt.Store(d)
		}
		return true, nil
	case errors.Is(err, nats.ErrNoResponders):
		h.lost("heartbeat had no responders: the dispatcher no longer runs this attempt")
		return false, ErrAttemptLost
	case errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		// Unacknowledged (or no longer wanted): the fencing time, not this
		// heartbeat, decides.
		return false, nil
	}
	return false, err
}

// late reports whether the request arrived more than the heartbeat timeout
// after it was sent (attempt_deadline − budget_ms), by this machine's wall
// clock: the dispatcher may already have given it up (SPEC §5.2, late
// requests), say because this process was paused with it in its socket.
func late(received, attemptDeadline time.Time, budget, interval time.Duration) bool {
	if interval <= 0 {
		return false
	}
	return received.Round(0).Sub(attemptDeadline.Add(-budget)) > 3*interval
}

// confirmLate makes sure, under heartbeat_ack, that the dispatcher still
// runs an attempt whose request came late, before the handler's code
// runs: it sends a heartbeat at once and fences the attempt unless it is
// acknowledged within one interval. Starting a request the dispatcher gave
// up would run the task twice at once (its next attempt runs elsewhere).
func (h *heartbeater) confirmLate(ctx context.Context) {
	r := h.r
	if !r.heartbeatAck || !late(h.received, r.task.AttemptDeadline, r.task.Budget, r.heartbeatInterval) {
		return
	}
	acked, err := h.send(ctx, nil, "", false)
	switch {
	case acked || errors.Is(err, ErrAttemptLost) || ctx.Err() != nil:
	case err != nil:
		h.lost("late request: its heartbeat could not be sent: " + err.Error())
	default:
		h.lost("late request: its heartbeat was not acknowledged within the heartbeat interval")
	}
}

// ErrAttemptLost is what Task.Heartbeat returns once the attempt is fenced:
// the dispatcher no longer runs it (protocol 1.1, heartbeat_ack), and its
// context is cancelled with reason lost.
var ErrAttemptLost = errors.New("jetbridge: attempt lost: the dispatcher no longer runs it")

// FirstHeartbeatDelay bounds the wait for an attempt's first heartbeat: it
// goes out min(FirstHeartbeatDelay, heartbeat interval) after the request
// arrived (SPEC §5.1), so an attempt that replies sooner costs no
// heartbeat at all.
const FirstHeartbeatDelay = 250 * time.Millisecond

// firstBeatAt is when the first heartbeat of an attempt is due.
func (h *heartbeater) firstBeatAt() time.Time {
	return h.received.Add(min(FirstHeartbeatDelay, h.r.heartbeatInterval))
}

// keepAlive sends a bare heartbeat shortly after receipt (firstBeatAt) and
// then every heartbeat interval, and checks the fencing time, until stop is
// called or ctx ends (the dispatcher ignores heartbeats after that).
func (h *heartbeater) keepAlive(ctx context.Context) (stop func()) {
	if h.r.heartbeatInterval <= 0 {
		return func() {}
	}
	ctx, quit := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		next := h.firstBeatAt()
		timer := time.NewTimer(time.Until(next))
		defer timer.Stop()
		for {
			wake := next
			if h.r.heartbeatAck && h.fenceAt().Before(wake) {
				wake = h.fenceAt()
			}
			timer.Reset(time.Until(wake))
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
			now := time.Now()
			if h.r.heartbeatAck && !now.Before(h.fenceAt()) {
				h.lost("no heartbeat acknowledged within the heartbeat timeout")
				return
			}
			if now.Before(next) {
				continue
			}
			next = now.Add(h.r.heartbeatInterval)
			if _, err := h.send(ctx, nil, "", true); errors.Is(err, ErrAttemptLost) {
				return
			} else if err != nil {
				h.s.log.Warn("jetbridge: heartbeat not sent", "task_id", h.r.task.ID, "error", err)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			quit()
			<-finished
		})
	}
}
