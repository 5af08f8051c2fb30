package jetbridge_test

import (
	"context"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/nats-io/nats.go"
)

// A service with one handler that drains on SIGTERM.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	svc, err := jetbridge.AddService(nc, "mailer", "1.0.0", jetbridge.WithConcurrency(8))
	if err != nil {
		log.Fatal(err)
	}
	err = svc.AddHandler("email:new", func(ctx context.Context, t *jetbridge.Task) (any, error) {
		var in struct {
			To string `json:"to"`
		}
		if err := t.Decode(&in); err != nil {
			return nil, err
		}
		if in.To == "" {
			return nil, jetbridge.Terminate("no_recipient", "payload has no to")
		}
		if err := sendMail(ctx, in.To); err != nil {
			return nil, jetbridge.Retry("smtp_busy", err.Error(), time.Minute)
		}
		return map[string]bool{"sent": true}, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := svc.Serve(ctx); err != nil {
		log.Fatal(err)
	}
}

func sendMail(ctx context.Context, to string) error { return nil }

// Reporting progress from a long handler; the service already sends bare
// heartbeats on its own.
func ExampleTask_Heartbeat() {
	_ = func(ctx context.Context, t *jetbridge.Task) (any, error) {
		for i := range 10 {
			if err := ctx.Err(); err != nil {
				return nil, err // cancelled or out of time
			}
			_ = t.Heartbeat(ctx, new(float64(i)/10), "working")
		}
		return nil, nil
	}
}

// Middleware: logging and a 30 s limit around every handler, and a policy
// check for the email:* task types that can refuse a task before its
// handler runs. (This is the README's sample.)
func ExampleService_Use() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	svc, err := jetbridge.AddService(nc, "mailer", "1.0.0")
	if err != nil {
		log.Fatal(err)
	}
	svc.Use(jetbridge.Logging(slog.Default()), jetbridge.Timeout(30*time.Second))
	err = svc.UseFor("email:*", func(next jetbridge.HandlerFunc) jetbridge.HandlerFunc {
		return func(ctx context.Context, t *jetbridge.Task) (any, error) {
			if t.Attempt > 5 {
				return nil, jetbridge.Terminate("too_many_tries", "giving up on this email")
			}
			return next(ctx, t)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
}
