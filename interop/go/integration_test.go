package jetbridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
)

// harness is a service on a connection of its own and a client playing the
// dispatcher on another, as in production.
type harness struct {
	t       *testing.T
	svc     *Service
	svcConn *nats.Conn
	client  *nats.Conn
	prefix  string
	name    string
}

func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	h := &harness{t: t, svcConn: connect(t), client: connect(t), prefix: "test." + nuid.Next(), name: "svc-" + nuid.Next()}
	svc, err := AddService(h.svcConn, h.name, "1.0.0", append([]Option{WithSubjectPrefix(h.prefix)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h.svc = svc
	t.Cleanup(func() {
		// A failed test may leave a handler waiting: cancel it rather
		// than hang.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Stop(ctx)
	})
	return h
}

func (h *harness) handle(taskType string, fn HandlerFunc) {
	h.t.Helper()
	if err := h.svc.AddHandler(taskType, fn); err != nil {
		h.t.Fatal(err)
	}
	// The endpoint is subscribed once the server has seen the SUB; the
	// client is on another connection.
	if err := h.svcConn.Flush(); err != nil {
		h.t.Fatal(err)
	}
}

// attempt is one request as the dispatcher would send it.
type attempt struct {
	token, taskType, heartbeatSubject, cancelSubject string
	body                                             map[string]any
}

func (h *harness) attempt(taskType string, payload any) *attempt {
	body := baseRequest(h.t)
	token := nuid.Next()
	a := &attempt{token: token, taskType: taskType, heartbeatSubject: "test.hb." + token, cancelSubject: "test.cancel." + token, body: body}
	body["task_type"] = taskType
	body["attempt_token"] = token
	body["heartbeat_subject"] = a.heartbeatSubject
	body["cancel_subject"] = a.cancelSubject
	body["attempt_deadline"] = time.Now().Add(30 * time.Second).UTC().Format(time.RFC3339Nano)
	body["budget_ms"] = 30000
	body["payload"] = payload
	return a
}

// send sends the attempt's request and delivers the reply on the channel.
func (h *harness) send(a *attempt) <-chan *nats.Msg {
	return h.sendRaw(a.taskType, mustMarshal(h.t, a.body))
}

func (h *harness) sendRaw(taskType string, data []byte) <-chan *nats.Msg {
	replies := make(chan *nats.Msg, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		msg, err := h.client.RequestWithContext(ctx, h.prefix+"."+taskType, data)
		if err != nil {
			h.t.Errorf("request: %v", err)
			close(replies)
			return
		}
		replies <- msg
	}()
	return replies
}

// awaitReply waits for a reply and decodes it, checking it against the
// schema and the attempt token.
func awaitReply(t *testing.T, replies <-chan *nats.Msg, token string) (testReply, *nats.Msg) {
	t.Helper()
	msg, ok := <-replies
	if !ok {
		t.FailNow()
	}
	validate(t, "task_reply", msg.Data)
	r := decodeReplyBody(t, msg.Data)
	if r.AttemptToken != token {
		t.Errorf("attempt_token %q, want %q", r.AttemptToken, token)
	}
	return r, msg
}

func TestServiceEndToEnd(t *testing.T) {
	h := newHarness(t)
	h.handle("email:new", func(ctx context.Context, task *Task) (any, error) {
		var in struct{ To string }
		if err := task.Decode(&in); err != nil {
			return nil, err
		}
		if _, ok := ctx.Deadline(); !ok {
			return nil, errors.New("no deadline on the context")
		}
		return map[string]any{"sent": true, "to": in.To, "attempt": task.Attempt}, nil
	})
	a := h.attempt("email:new", map[string]string{"to": "ada@example.com"})
	r, msg := awaitReply(t, h.send(a), a.token)
	if r.Status != "ok" || string(r.Result) != `{"attempt":1,"sent":true,"to":"ada@example.com"}` {
		t.Errorf("reply %s", msg.Data)
	}
	if len(msg.Header) != 0 {
		t.Errorf("ok reply with headers %v", msg.Header)
	}
}

func TestServiceBinaryEcho(t *testing.T) {
	h := newHarness(t)
	h.handle("blob", func(ctx context.Context, task *Task) (any, error) {
		return Bytes{Data: task.Payload, ContentType: task.ContentType}, nil
	})
	a := h.attempt("blob", "AAECA/7/")
	a.body["payload_encoding"], a.body["content_type"] = "base64", "image/x-test"
	r, msg := awaitReply(t, h.send(a), a.token)
	if r.ResultEncoding != "base64" || r.ContentType != "image/x-test" || string(r.Result) != `"AAECA/7/"` {
		t.Errorf("reply %s", msg.Data)
	}
}

func TestServiceHeartbeats(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.handle("long", func(ctx context.Context, task *Task) (any, error) {
		if err := task.Heartbeat(ctx, new(0.4), "resizing"); err != nil {
			return nil, err
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	a := h.attempt("long", nil)
	a.body["heartbeat_interval_ms"] = 20
	beats, err := h.client.SubscribeSync(a.heartbeatSubject)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.client.Flush(); err != nil {
		t.Fatal(err)
	}
	replies := h.send(a)

	// The explicit heartbeat comes first; automatic ones follow while the
	// handler runs.
	var sawProgress, sawBare bool
	for !sawProgress || !sawBare {
		msg, err := beats.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for heartbeats (progress %v, bare %v): %v", sawProgress, sawBare, err)
		}
		validate(t, "heartbeat", msg.Data)
		var hb struct {
			TaskID       string   `json:"task_id"`
			AttemptToken string   `json:"attempt_token"`
			Progress     *float64 `json:"progress"`
			Message      string   `json:"message"`
		}
		mustUnmarshal(t, msg.Data, &hb)
		if hb.AttemptToken != a.token || hb.TaskID != a.body["task_id"] {
			t.Errorf("heartbeat for another attempt: %s", msg.Data)
		}
		switch {
		case hb.Progress != nil && *hb.Progress == 0.4 && hb.Message == "resizing":
			sawProgress = true
		case hb.Progress == nil && hb.Message == "":
			sawBare = true
		default:
			t.Errorf("unexpected heartbeat %s", msg.Data)
		}
	}
	close(release)
	if r, msg := awaitReply(t, replies, a.token); r.Status != "ok" {
		t.Errorf("reply %s", msg.Data)
	}
}

func TestServiceCancel(t *testing.T) {
	h := newHarness(t)
	started := make(chan struct{})
	causes := make(chan error, 1)
	h.handle("long", func(ctx context.Context, task *Task) (any, error) {
		close(started)
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	a := h.attempt("long", nil)
	replies := h.send(a)
	<-started
	// The service subscribed to the cancel subject before the handler
	// started; a flush of its connection makes sure the server knows.
	if err := h.svcConn.Flush(); err != nil {
		t.Fatal(err)
	}
	cancelFor := func(token, reason string) []byte {
		return mustMarshal(t, map[string]any{"type": "io.jetbridge.v1.cancel", "protocol": 1,
			"task_id": a.body["task_id"], "attempt_token": token, "reason": reason, "message": "cancelled: " + reason})
	}
	// Only the valid cancel for this attempt may count: the others come
	// first, so a library that took them would report their reason.
	for _, msg := range [][]byte{cancelFor("someone_else_1", "lost"), cancelFor(a.token, "bored"), []byte("stop")} {
		if err := h.client.Publish(a.cancelSubject, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.client.Publish(a.cancelSubject, cancelFor(a.token, "operator")); err != nil {
		t.Fatal(err)
	}
	var ce *CancelError
	if cause := <-causes; !errors.As(cause, &ce) || ce.Reason != "operator" || ce.Message != "cancelled: operator" {
		t.Errorf("cause %v", cause)
	}
	if r, msg := awaitReply(t, replies, a.token); r.Status != "retry" || r.Error.Code != CodeCancelled {
		t.Errorf("reply %s", msg.Data)
	}
}

func TestServiceAttemptDeadline(t *testing.T) {
	h := newHarness(t)
	causes := make(chan error, 1)
	h.handle("slow", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, fmt.Errorf("gave up: %w", ctx.Err())
	})
	a := h.attempt("slow", nil)
	a.body["budget_ms"] = 50
	replies := h.send(a)
	var ce *CancelError
	if cause := <-causes; !errors.As(cause, &ce) || ce.Reason != "timeout" {
		t.Errorf("cause %v", cause)
	}
	if r, msg := awaitReply(t, replies, a.token); r.Status != "retry" || r.Error.Code != CodeCancelled {
		t.Errorf("reply %s", msg.Data)
	}
}

func TestServiceOutcomes(t *testing.T) {
	h := newHarness(t)
	h.handle("fail", func(ctx context.Context, task *Task) (any, error) {
		var in struct{ Kind string }
		if err := task.Decode(&in); err != nil {
			return nil, err
		}
		switch in.Kind {
		case "panic":
			panic("planned panic")
		case "error":
			return nil, errors.New("plain error")
		case "retry":
			return nil, Retry("rate_limited", "rate limited", 1500*time.Millisecond)
		case "terminate":
			return nil, Terminate("bad_address", "no such mailbox")
		case "big":
			return make([]byte, 2<<20), nil // twice the default max_payload
		}
		return nil, nil
	})
	for kind, want := range map[string]struct{ status, code, header string }{
		"panic":     {"retry", CodeHandlerError, "500"},
		"error":     {"retry", CodeHandlerError, "500"},
		"retry":     {"retry", "rate_limited", "429"},
		"terminate": {"terminate", "bad_address", "400"},
		"big":       {"terminate", CodeResultTooLarge, "400"},
	} {
		t.Run(kind, func(t *testing.T) {
			a := h.attempt("fail", map[string]string{"kind": kind})
			r, msg := awaitReply(t, h.send(a), a.token)
			if r.Status != want.status || r.Error.Code != want.code || msg.Header.Get(micro.ErrorCodeHeader) != want.header {
				t.Errorf("reply %s %v", msg.Data, msg.Header)
			}
		})
	}
}

func TestServiceRejects(t *testing.T) {
	h := newHarness(t)
	h.handle("known", func(ctx context.Context, task *Task) (any, error) { return nil, nil })

	v2 := h.attempt("known", nil)
	v2.body["protocol"], v2.body["type"] = 2, "io.jetbridge.v2.task_request"
	r, msg := awaitReply(t, h.send(v2), v2.token)
	if r.Status != "retry" || r.Error.Code != CodeUnsupportedProtocol || fmt.Sprint(r.SupportedProtocols) != "[1]" ||
		msg.Header.Get(micro.ErrorCodeHeader) != "505" || msg.Header.Get(micro.ErrorHeader) != "unsupported protocol version 2" {
		t.Errorf("protocol 2: %s %v", msg.Data, msg.Header)
	}

	// The body's task type decides, whatever subject the request came on.
	other := h.attempt("known", nil)
	other.body["task_type"] = "unknown:type"
	if r, msg := awaitReply(t, h.send(other), other.token); r.Status != "terminate" || r.Error.Code != CodeUnknownTaskType {
		t.Errorf("unknown type: %s", msg.Data)
	}

	if r, msg := awaitReply(t, h.sendRaw("known", []byte("{not json")), ""); r.Status != "terminate" || r.Error.Code != CodeBadRequest || msg.Header.Get(micro.ErrorCodeHeader) != "400" {
		t.Errorf("not json: %s %v", msg.Data, msg.Header)
	}
}

func TestServiceConcurrencyLimit(t *testing.T) {
	h := newHarness(t, WithConcurrency(2))
	var running, most atomic.Int32
	started := make(chan struct{}, 3)
	release := make(chan struct{})
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		running.Add(-1)
		return nil, nil
	})
	var all []<-chan *nats.Msg
	var tokens []string
	for range 3 {
		a := h.attempt("work", nil)
		all = append(all, h.send(a))
		tokens = append(tokens, a.token)
	}
	<-started
	<-started
	close(release) // the third can start only now
	<-started
	for i, replies := range all {
		if r, msg := awaitReply(t, replies, tokens[i]); r.Status != "ok" {
			t.Errorf("reply %s", msg.Data)
		}
	}
	if most.Load() != 2 {
		t.Errorf("%d attempts ran at once, want 2", most.Load())
	}
}

// A request that waits for a slot longer than its budget is answered
// without running: its reply could only be stale.
func TestServiceQueuedAttemptExpires(t *testing.T) {
	h := newHarness(t, WithConcurrency(1))
	var runs atomic.Int32
	started, release := make(chan struct{}, 2), make(chan struct{})
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		runs.Add(1)
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
	second := h.attempt("work", nil)
	second.body["budget_ms"] = 50
	if r, msg := awaitReply(t, h.send(second), second.token); r.Status != "retry" || r.Error.Code != CodeCancelled ||
		!strings.Contains(r.Error.Message, "not started") {
		t.Errorf("queued attempt: %s", msg.Data)
	}
	close(release)
	awaitReply(t, firstReplies, first.token)
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", runs.Load())
	}
}

func TestServiceDrain(t *testing.T) {
	h := newHarness(t)
	started, release := make(chan struct{}, 1), make(chan struct{})
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "finished", nil
	})
	a := h.attempt("work", nil)
	replies := h.send(a)
	<-started

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- h.svc.Serve(ctx) }()
	cancel()
	<-h.svc.draining // the endpoints are unsubscribed
	// Draining stops new requests: they find no responder...
	waitNoResponders(t, h)
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v while an attempt was running", err)
	default:
	}
	// ...while the running attempt finishes and its reply gets out.
	close(release)
	if r, msg := awaitReply(t, replies, a.token); r.Status != "ok" || string(r.Result) != `"finished"` {
		t.Errorf("reply %s", msg.Data)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := h.svc.AddHandler("late", func(context.Context, *Task) (any, error) { return nil, nil }); !errors.Is(err, ErrStopped) {
		t.Errorf("AddHandler after Stop: %v", err)
	}
}

// waitNoResponders checks that the service's endpoints are gone from the
// server once their unsubscribes have been flushed.
func waitNoResponders(t *testing.T, h *harness) {
	t.Helper()
	if err := h.svcConn.Flush(); err != nil {
		t.Fatal(err)
	}
	a := h.attempt("work", nil)
	_, err := h.client.Request(h.prefix+".work", mustMarshal(t, a.body), 5*time.Second)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request during drain: %v, want no responders", err)
	}
}

func TestServiceDrainTimeout(t *testing.T) {
	h := newHarness(t, WithDrainTimeout(20*time.Millisecond))
	started := make(chan struct{})
	causes := make(chan error, 1)
	h.handle("stuck", func(ctx context.Context, task *Task) (any, error) {
		close(started)
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	a := h.attempt("stuck", nil)
	replies := h.send(a)
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.svc.Serve(ctx); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if cause := <-causes; !errors.Is(cause, ErrDraining) {
		t.Errorf("cause %v", cause)
	}
	if r, msg := awaitReply(t, replies, a.token); r.Status != "retry" || r.Error.Code != CodeCancelled {
		t.Errorf("reply %s", msg.Data)
	}
}

func TestServiceMicroInfo(t *testing.T) {
	h := newHarness(t, WithMetadata(map[string]string{"team": "imaging", metaSDK: "spoofed"}))
	h.handle("image:resize", func(ctx context.Context, task *Task) (any, error) { return nil, nil })
	msg, err := h.client.Request("$SRV.INFO."+h.name, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	mustUnmarshal(t, msg.Data, &info)
	want := map[string]string{"jetbridge.protocols": "1,1.1", "jetbridge.sdk": "go/" + Version, "team": "imaging"}
	for k, v := range want {
		if info.Metadata[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, info.Metadata[k], v)
		}
	}
	if len(info.Endpoints) != 1 {
		t.Fatalf("endpoints %+v", info.Endpoints)
	}
	e := info.Endpoints[0]
	if e.Subject != h.prefix+".image:resize" || e.QueueGroup != "jetbridge" || e.Metadata["jetbridge.task_type"] != "image:resize" {
		t.Errorf("endpoint %+v", e)
	}

	a := h.attempt("image:resize", nil)
	awaitReply(t, h.send(a), a.token)
	msg, err = h.client.Request("$SRV.STATS."+h.name, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	mustUnmarshal(t, msg.Data, &stats)
	var data endpointStatsData
	if len(stats.Endpoints) == 1 {
		mustUnmarshal(t, stats.Endpoints[0].Data, &data)
	}
	if data.OK != 1 {
		t.Errorf("stats %s", msg.Data)
	}
}

func TestAddHandlerChecks(t *testing.T) {
	h := newHarness(t)
	noop := func(context.Context, *Task) (any, error) { return nil, nil }
	if err := h.svc.AddHandler("bad.type", noop); err == nil {
		t.Error("task type with a dot accepted")
	}
	h.handle("once", noop)
	if err := h.svc.AddHandler("once", noop); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("duplicate handler: %v", err)
	}
	if _, err := AddService(h.svcConn, "x", "1.0.0", WithConcurrency(0)); err == nil {
		t.Error("concurrency 0 accepted")
	}
}
