package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	aj "github.com/choria-io/asyncjobs"
	"github.com/nats-io/nats.go"
)

// handlerFor is the Go handler a worker runs in each mode, as any asyncjobs user would write it.
func handlerFor(mode string) (aj.HandlerFunc, error) {
	ok := func(t *aj.Task) any {
		return map[string]any{"handled_by": "asyncjobs", "payload": json.RawMessage(t.Payload), "tries": t.Tries}
	}
	switch mode {
	case "ok":
		return func(_ context.Context, _ aj.Logger, t *aj.Task) (any, error) { return ok(t), nil }, nil
	case "flaky":
		return func(_ context.Context, _ aj.Logger, t *aj.Task) (any, error) {
			if t.Tries == 1 {
				return nil, fmt.Errorf("planned failure on try %d", t.Tries)
			}
			return ok(t), nil
		}, nil
	case "fail":
		return func(_ context.Context, _ aj.Logger, t *aj.Task) (any, error) {
			return nil, fmt.Errorf("planned failure on try %d", t.Tries)
		}, nil
	case "terminate":
		return func(_ context.Context, _ aj.Logger, t *aj.Task) (any, error) {
			return nil, fmt.Errorf("planned terminate: %w", aj.ErrTerminateTask)
		}, nil
	}
	return nil, fmt.Errorf("unknown mode %q: use ok, flaky, fail, terminate or remote", mode)
}

// worker runs asyncjobs' own processor (Client.Run with a Mux) on a queue. It counts a task done when asyncjobs
// publishes a final state event for a task it handled, and stops after --count such tasks.
func worker(args []string) error {
	f := newFlags("worker")
	queue := f.String("queue", "DEFAULT", "queue to process")
	taskType := f.String("type", "", "task type to handle")
	mode := f.String("mode", "ok", "ok, flaky (fails try 1), fail, terminate, or remote (asyncjobs' request-reply callout)")
	count := f.Int("count", 1, "stop after this many tasks reached a final state (0: run until signalled)")
	concurrency := f.Int("concurrency", 4, "asyncjobs ClientConcurrency")
	timeout := f.Duration("timeout", 60*time.Second, "give up after this long")
	verifyKey := f.String("verify", "", "hex ed25519 public key: load only tasks signed by it (v0.3.0)")
	optional := f.Bool("signatures-optional", false, "with --verify: also load unsigned tasks")
	f.Parse(args)

	opts := []aj.ClientOpt{
		aj.BindWorkQueue(*queue),
		aj.ClientConcurrency(*concurrency),
		// a fast retry policy so retried tasks come back within the test's time
		aj.RetryBackoffPolicy(&aj.RetryPolicy{Intervals: []time.Duration{100 * time.Millisecond}, Jitter: 0.1}),
	}
	if *verifyKey != "" {
		verification, err := verificationOpts(*verifyKey, *optional)
		if err != nil {
			return err
		}
		opts = append(opts, verification...)
	}
	client, nc, err := f.client(opts...)
	if err != nil {
		return err
	}
	defer nc.Close()

	ctx, cancel := signalContext(*timeout)
	defer cancel()
	tracker, err := trackFinalStates(ctx, nc, *count, cancel)
	if err != nil {
		return err
	}

	var h aj.HandlerFunc
	if *mode == "remote" {
		// asyncjobs' own request-reply callout, registered the way Mux.RequestReply does it
		remote := aj.NewTaskRouter()
		if err := remote.RequestReply(*taskType, client); err != nil {
			return err
		}
		h = func(ctx context.Context, log aj.Logger, t *aj.Task) (any, error) {
			return remote.Handler(t)(ctx, log, t)
		}
	} else if h, err = handlerFor(*mode); err != nil {
		return err
	}
	router := aj.NewTaskRouter()
	if err := router.HandleFunc(*taskType, tracker.observe(h)); err != nil {
		return err
	}
	ready()
	err = client.Run(ctx, router)
	emit(map[string]any{"done": tracker.done()})
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if *count > 0 && tracker.done() < *count {
		return fmt.Errorf("only %d of %d tasks finished before the timeout", tracker.done(), *count)
	}
	return nil
}

// observe prints what asyncjobs handed the handler, and notes the task, before running it.
func (ft *finalTracker) observe(h aj.HandlerFunc) aj.HandlerFunc {
	return func(ctx context.Context, log aj.Logger, t *aj.Task) (any, error) {
		ft.mu.Lock()
		ft.handled[t.ID] = true
		ft.mu.Unlock()
		deadline, _ := ctx.Deadline()
		emit(map[string]any{
			"handled": t.ID, "type": t.Type, "queue": t.Queue, "state": t.State, "tries": t.Tries,
			"max_tries": t.MaxTries, "payload": json.RawMessage(orNull(t.Payload)),
			"budget_ms": time.Until(deadline).Milliseconds(),
		})
		return h(ctx, log, t)
	}
}

func orNull(b []byte) []byte {
	if len(b) == 0 || !json.Valid(b) {
		return []byte("null")
	}
	return b
}

// finalTracker counts the handled tasks that reached complete, terminated or expired, from asyncjobs' own events.
type finalTracker struct {
	mu      sync.Mutex
	handled map[string]bool
	seen    map[string]bool
}

func (t *finalTracker) done() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen)
}

func trackFinalStates(ctx context.Context, nc *nats.Conn, count int, stop func()) (*finalTracker, error) {
	t := &finalTracker{handled: map[string]bool{}, seen: map[string]bool{}}
	sub, err := nc.Subscribe(aj.TaskStateChangeEventSubjectWildcard, func(m *nats.Msg) {
		ev, _, err := aj.ParseEventJSON(m.Data)
		if err != nil {
			return
		}
		e, ok := ev.(aj.TaskStateChangeEvent)
		if !ok {
			return
		}
		switch e.State {
		case aj.TaskStateCompleted, aj.TaskStateTerminated, aj.TaskStateExpired:
		default:
			return
		}
		t.mu.Lock()
		if t.handled[e.TaskID] {
			t.seen[e.TaskID] = true
		}
		n := len(t.seen)
		t.mu.Unlock()
		if count > 0 && n >= count {
			// let the processor finish acknowledging the item before stopping it
			time.AfterFunc(200*time.Millisecond, stop)
		}
	})
	if err != nil {
		return nil, err
	}
	go func() { <-ctx.Done(); sub.Unsubscribe() }()
	return t, nc.Flush()
}
