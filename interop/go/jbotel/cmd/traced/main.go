// Command traced is a handler service with the tracing middleware, used by
// tests/tracing: it serves the task type named by JETBRIDGE_TYPE, fails an
// attempt with a retry while its number is at most the payload's
// fail_attempts, and completes it otherwise.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/jetbridge/jetbridge/interop/go/jbotel"
	"github.com/nats-io/nats.go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "traced:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	shutdown, err := jbotel.Setup(ctx, "traced-go")
	if err != nil {
		return err
	}
	defer shutdown(context.Background())

	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := jetbridge.AddService(nc, "traced-go", "1.0.0")
	if err != nil {
		return err
	}
	svc.Use(jbotel.Middleware())
	taskType := os.Getenv("JETBRIDGE_TYPE")
	if taskType == "" {
		taskType = "trace:go"
	}
	err = svc.AddHandler(taskType, func(ctx context.Context, t *jetbridge.Task) (any, error) {
		var p struct {
			FailAttempts int `json:"fail_attempts"`
		}
		if err := t.Decode(&p); err != nil {
			return nil, err
		}
		if t.Attempt <= p.FailAttempts {
			return nil, jetbridge.Retry("planned_failure", fmt.Sprintf("attempt %d fails on purpose", t.Attempt), 50*time.Millisecond)
		}
		return map[string]any{"lang": "go", "attempt": t.Attempt}, nil
	})
	if err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	fmt.Println("ready")
	return svc.Serve(ctx)
}
