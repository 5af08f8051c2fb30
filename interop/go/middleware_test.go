package jetbridge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Middleware run outermost first: Use's in order, then UseFor's that match
// the task type; one can short-circuit or change the result.
func TestMiddlewareOrderShortCircuitAndResult(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	var order []string
	trace := func(name string) Middleware {
		return func(next HandlerFunc) HandlerFunc {
			return func(ctx context.Context, task *Task) (any, error) {
				mu.Lock()
				order = append(order, name+">")
				mu.Unlock()
				result, err := next(ctx, task)
				mu.Lock()
				order = append(order, "<"+name)
				mu.Unlock()
				return result, err
			}
		}
	}
	h.svc.Use(trace("a"), trace("b"))
	if err := h.svc.UseFor("email:*", trace("email"), func(next HandlerFunc) HandlerFunc {
		return func(ctx context.Context, task *Task) (any, error) {
			if task.Attempt > 1 {
				return nil, Terminate("blocked", "only one try") // never calls next
			}
			result, err := next(ctx, task)
			return map[string]any{"wrapped": result}, err
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.UseFor("[", trace("bad")); err == nil {
		t.Error("a malformed pattern was accepted")
	}
	handler := func(ctx context.Context, task *Task) (any, error) {
		mu.Lock()
		order = append(order, "handler")
		mu.Unlock()
		return "sent", nil
	}
	h.handle("email:new", handler)
	h.handle("image:resize", handler)

	a := h.attempt("email:new", nil)
	if r, msg := awaitReply(t, h.send(a), a.token); r.Status != "ok" || string(r.Result) != `{"wrapped":"sent"}` {
		t.Errorf("reply %s", msg.Data)
	}
	if got := strings.Join(order, " "); got != "a> b> email> handler <email <b <a" {
		t.Errorf("order %q", got)
	}

	order = nil
	a = h.attempt("email:new", nil)
	a.body["attempt"] = 2
	if r, msg := awaitReply(t, h.send(a), a.token); r.Status != "terminate" || r.Error.Code != "blocked" {
		t.Errorf("short-circuit reply %s", msg.Data)
	}
	if got := strings.Join(order, " "); got != "a> b> email> <email <b <a" {
		t.Errorf("order %q", got)
	}

	order = nil
	a = h.attempt("image:resize", nil)
	if r, msg := awaitReply(t, h.send(a), a.token); r.Status != "ok" || string(r.Result) != `"sent"` {
		t.Errorf("reply %s", msg.Data)
	}
	if got := strings.Join(order, " "); got != "a> b> handler <b <a" {
		t.Errorf("order %q", got)
	}
}

// The built-ins: a panic anywhere in the chain is a handler_error retry,
// Timeout cancels with reason timeout, Logging logs the outcome.
func TestMiddlewareBuiltins(t *testing.T) {
	h := newHarness(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	h.svc.Use(Logging(slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))))
	if err := h.svc.UseFor("slow", Timeout(30*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.UseFor("bad:*", func(HandlerFunc) HandlerFunc { panic("middleware bug") }); err != nil {
		t.Fatal(err)
	}
	causes := make(chan error, 1)
	h.handle("slow", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	h.handle("bad:one", func(ctx context.Context, task *Task) (any, error) { return nil, nil })

	a := h.attempt("slow", nil)
	if r, msg := awaitReply(t, h.send(a), a.token); r.Status != "retry" || r.Error.Code != CodeCancelled {
		t.Errorf("reply %s", msg.Data)
	}
	var ce *CancelError
	if cause := <-causes; !errors.As(cause, &ce) || ce.Reason != "timeout" {
		t.Errorf("cause %v", cause)
	}
	logMu.Lock()
	logged := logs.String()
	logMu.Unlock()
	if !strings.Contains(logged, "attempt failed") || !strings.Contains(logged, "task_type=slow") {
		t.Errorf("log %q", logged)
	}

	a = h.attempt("bad:one", nil)
	if r, msg := awaitReply(t, h.send(a), a.token); r.Status != "retry" || r.Error.Code != CodeHandlerError || !strings.Contains(r.Error.Message, "middleware bug") {
		t.Errorf("reply %s", msg.Data)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
