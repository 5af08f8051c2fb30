package jetbridge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// A request waiting for a free worker is heartbeated from the moment it
// arrives (protocol 1.1 rule 1).
func TestReceiptHeartbeatWhileQueued(t *testing.T) {
	h := newHarness(t, WithConcurrency(1))
	started, release := make(chan struct{}, 2), make(chan struct{})
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	first := h.attempt("work", nil)
	firstReplies := h.send(first)
	<-started

	queued := h.attempt("work", nil)
	queued.body["heartbeat_interval_ms"] = 60000 // only the receipt heartbeat can come in time
	beats, err := h.client.SubscribeSync(queued.heartbeatSubject)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.client.Flush(); err != nil {
		t.Fatal(err)
	}
	queuedReplies := h.send(queued)
	msg, err := beats.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no receipt heartbeat: %v", err)
	}
	validate(t, "heartbeat", msg.Data)
	if msg.Reply != "" {
		t.Errorf("heartbeat sent as a request without heartbeat_ack")
	}
	select {
	case <-started:
		t.Fatal("the queued attempt started before a worker was free")
	default:
	}
	close(release)
	awaitReply(t, firstReplies, first.token)
	awaitReply(t, queuedReplies, queued.token)
}

// With heartbeat_ack, heartbeats are requests; acknowledged ones keep the
// attempt alive.
func TestHeartbeatAcknowledged(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	a := h.attempt("work", nil)
	// Long enough that acks delayed by a loaded machine still come within
	// the heartbeat timeout of 3 intervals.
	a.body["heartbeat_interval_ms"] = 300
	a.body["heartbeat_ack"] = true
	acked := make(chan struct{}, 100)
	sub, err := h.client.Subscribe(a.heartbeatSubject, func(m *nats.Msg) {
		_ = m.Respond(nil)
		acked <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := h.client.Flush(); err != nil {
		t.Fatal(err)
	}
	replies := h.send(a)
	// Five heartbeats, over four intervals: three without an ack would have
	// fenced the attempt, which would end it with a reply instead.
	for range 5 {
		select {
		case <-acked:
		case msg, ok := <-replies:
			if ok {
				t.Fatalf("the attempt ended while its heartbeats were acknowledged: %s", msg.Data)
			}
			t.FailNow() // the request failed, and said so

		}
	}
	close(release)
	if r, msg := awaitReply(t, replies, a.token); r.Status != "ok" {
		t.Errorf("reply %s", msg.Data)
	}
}

// A heartbeat with no responders fences the attempt at once: it is
// cancelled with reason lost, and its reply is still sent.
func TestHeartbeatNoRespondersFences(t *testing.T) {
	h := newHarness(t)
	causes := make(chan error, 1)
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return "late result", nil
	})
	a := h.attempt("work", nil)
	a.body["heartbeat_interval_ms"] = 60000 // the receipt heartbeat alone must fence
	a.body["heartbeat_ack"] = true
	replies := h.send(a)
	var ce *CancelError
	if cause := <-causes; !errors.As(cause, &ce) || ce.Reason != "lost" {
		t.Errorf("cause %v", cause)
	}
	if r, msg := awaitReply(t, replies, a.token); r.Status != "ok" || string(r.Result) != `"late result"` {
		t.Errorf("reply %s", msg.Data)
	}
}

// Heartbeats that nobody acknowledges fence the attempt after three
// intervals.
func TestHeartbeatUnacknowledgedFences(t *testing.T) {
	h := newHarness(t)
	causes := make(chan error, 1)
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	a := h.attempt("work", nil)
	a.body["heartbeat_interval_ms"] = 30
	a.body["heartbeat_ack"] = true
	sub, err := h.client.Subscribe(a.heartbeatSubject, func(*nats.Msg) {}) // a responder that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := h.client.Flush(); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	replies := h.send(a)
	var ce *CancelError
	if cause := <-causes; !errors.As(cause, &ce) || ce.Reason != "lost" {
		t.Errorf("cause %v", cause)
	}
	if took := time.Since(sent); took < 90*time.Millisecond {
		t.Errorf("fenced after %v, before the heartbeat timeout of 90ms", took)
	}
	if r, msg := awaitReply(t, replies, a.token); r.Status != "retry" || r.Error.Code != CodeCancelled || !strings.Contains(r.Error.Message, "lost") {
		t.Errorf("reply %s", msg.Data)
	}
}

// A rejection does not echo an attempt token that is not valid.
func TestRejectionOmitsInvalidToken(t *testing.T) {
	h := newHarness(t)
	h.handle("known", func(ctx context.Context, task *Task) (any, error) { return nil, nil })
	a := h.attempt("known", nil)
	a.body["attempt_token"] = "not a token!"
	r, msg := awaitReply(t, h.send(a), "")
	var body map[string]any
	mustUnmarshal(t, msg.Data, &body)
	if _, echoed := body["attempt_token"]; echoed || r.Status != "terminate" || r.Error.Code != CodeBadRequest {
		t.Errorf("reply %s", msg.Data)
	}
}

func TestEndpointNameCollisionRefused(t *testing.T) {
	h := newHarness(t)
	noop := func(context.Context, *Task) (any, error) { return nil, nil }
	h.handle("a:b", noop)
	err := h.svc.AddHandler("a_b", noop)
	if err == nil || !strings.Contains(err.Error(), `"a:b"`) || !strings.Contains(err.Error(), `"a_b"`) {
		t.Errorf("second type with the same endpoint name: %v", err)
	}
}

func TestEndpointNames(t *testing.T) {
	for taskType, want := range map[string]string{"email:new": "email_new", "a-b_c": "a-b_c", "x:y/z~1": "x_y_z_1"} {
		if got := endpointName(taskType); got != want {
			t.Errorf("endpointName(%q) = %q, want %q", taskType, got, want)
		}
	}
}

// `nats micro stats` tells the truth (protocol 1.1 rule 10): retry and
// terminate replies and rejections are errors, and processing time is the
// handler's real time.
func TestMicroStatsCountFailures(t *testing.T) {
	h := newHarness(t)
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		var in struct{ Kind string }
		if err := task.Decode(&in); err != nil {
			return nil, err
		}
		switch in.Kind {
		case "retry":
			return nil, Retry("busy", "try later", 0)
		case "terminate":
			return nil, Terminate("bad_address", "no such mailbox")
		case "slow":
			time.Sleep(200 * time.Millisecond) // the time being measured
		}
		return "ok", nil
	})
	for _, kind := range []string{"ok", "retry", "terminate", "slow"} {
		a := h.attempt("work", map[string]string{"kind": kind})
		awaitReply(t, h.send(a), a.token)
	}
	awaitReply(t, h.sendRaw("work", []byte("{not json")), "")

	msg, err := h.client.Request("$SRV.STATS."+h.name, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	mustUnmarshal(t, msg.Data, &stats)
	if len(stats.Endpoints) != 1 {
		t.Fatalf("stats %s", msg.Data)
	}
	e := stats.Endpoints[0]
	if e.NumRequests != 5 || e.NumErrors != 3 || !strings.HasPrefix(e.LastError, "400:") {
		t.Errorf("requests %d errors %d last error %q, want 5, 3, 400:...", e.NumRequests, e.NumErrors, e.LastError)
	}
	if e.ProcessingTime < 200*time.Millisecond || e.AverageProcessingTime < 40*time.Millisecond {
		t.Errorf("processing time %v (average %v) for a handler that slept 200ms", e.ProcessingTime, e.AverageProcessingTime)
	}
	var data endpointStatsData
	mustUnmarshal(t, e.Data, &data)
	if data.OK != 2 || data.Retry != 1 || data.Terminate != 1 {
		t.Errorf("data %s", e.Data)
	}
	// PING names the service too.
	msg, err = h.client.Request("$SRV.PING."+h.name, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ping micro.Ping
	mustUnmarshal(t, msg.Data, &ping)
	if ping.Type != micro.PingResponseType || ping.Name != h.name || ping.ID != stats.ID {
		t.Errorf("ping %s", msg.Data)
	}
}

// lateAttempt makes a (with heartbeat_ack) look sent ten heartbeat
// intervals ago: its send time is attempt_deadline − budget_ms, and its
// deadline is still 30 intervals away.
func lateAttempt(a *attempt, intervalMs int) {
	interval := time.Duration(intervalMs) * time.Millisecond
	a.body["heartbeat_interval_ms"] = intervalMs
	a.body["heartbeat_ack"] = true
	a.body["budget_ms"] = 40 * intervalMs
	a.body["attempt_deadline"] = time.Now().Add(30 * interval).UTC().Format(time.RFC3339Nano)
}

// A late request whose heartbeat has no responders was given up by the
// dispatcher: it is fenced before its handler runs (SPEC §5.2, late
// requests).
func TestLateRequestNoRespondersNeverStarts(t *testing.T) {
	h := newHarness(t)
	started := make(chan struct{}, 1)
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		started <- struct{}{}
		return "ran", nil
	})
	a := h.attempt("work", nil)
	lateAttempt(a, 5000)
	r, msg := awaitReply(t, h.send(a), a.token)
	if r.Status != "retry" || r.Error.Code != CodeCancelled || !strings.Contains(r.Error.Message, "lost") {
		t.Errorf("reply %s", msg.Data)
	}
	select {
	case <-started:
		t.Error("the handler ran for a late request nobody acknowledged")
	default:
	}
}

// A late request whose heartbeat is acknowledged runs normally; the
// heartbeat goes out before the handler starts.
func TestLateRequestAckedRuns(t *testing.T) {
	h := newHarness(t)
	acked := make(chan struct{}, 100)
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		select {
		case <-acked:
		default:
			t.Error("the handler started before a heartbeat was acknowledged")
		}
		return "ran", nil
	})
	a := h.attempt("work", nil)
	lateAttempt(a, 5000)
	sub, err := h.client.Subscribe(a.heartbeatSubject, func(m *nats.Msg) {
		acked <- struct{}{}
		_ = m.Respond(nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := h.client.Flush(); err != nil {
		t.Fatal(err)
	}
	if r, msg := awaitReply(t, h.send(a), a.token); r.Status != "ok" || string(r.Result) != `"ran"` {
		t.Errorf("reply %s", msg.Data)
	}
}

// A fresh request under heartbeat_ack that finishes within the first
// heartbeat delay sends no heartbeat at all.
func TestFreshRequestNoHeartbeat(t *testing.T) {
	h := newHarness(t)
	h.handle("work", func(ctx context.Context, task *Task) (any, error) { return "ran", nil })
	a := h.attempt("work", nil)
	a.body["heartbeat_interval_ms"] = 60000
	a.body["heartbeat_ack"] = true
	beats, err := h.client.SubscribeSync(a.heartbeatSubject)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.client.Flush(); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	r, msg := awaitReply(t, h.send(a), a.token)
	if r.Status != "ok" {
		t.Errorf("reply %s", msg.Data)
	}
	if took := time.Since(sent); took >= FirstHeartbeatDelay {
		t.Skipf("the reply took %v, so a heartbeat was due: machine too loaded to check", took)
	}
	// The reply came after any heartbeat sent before it, on the same
	// connection; a flush makes sure the client has read that far.
	if err := h.client.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := beats.Pending(); n != 0 {
		t.Errorf("%d heartbeats for a fresh request that finished in %v", n, time.Since(sent))
	}
}

func TestLate(t *testing.T) {
	now := time.Now()
	deadline := now.Add(10 * time.Second) // sent 20s ago with a 30s budget
	for _, c := range []struct {
		interval time.Duration
		want     bool
	}{{6 * time.Second, true}, {7 * time.Second, false}, {0, false}} {
		if got := late(now, deadline, 30*time.Second, c.interval); got != c.want {
			t.Errorf("late with interval %v = %v, want %v", c.interval, got, c.want)
		}
	}
}
