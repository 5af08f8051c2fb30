// Command conformance is the Go conformance handler: it serves every task
// type of the contract in interop/README.md so that interop/conformance
// can drive this library through a real dispatcher.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	concurrency := jetbridge.DefaultConcurrency
	if v := os.Getenv("JETBRIDGE_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("JETBRIDGE_CONCURRENCY: %w", err)
		}
		concurrency = n
	}
	instance := env("JETBRIDGE_INSTANCE", "go-"+nuid.Next())

	nc, err := nats.Connect(env("NATS_URL", nats.DefaultURL), nats.Name("jetbridge-conformance-go "+instance),
		nats.MaxReconnects(-1)) // ride out any server restart (SPEC §2)
	if err != nil {
		return err
	}
	defer nc.Close()

	svc, err := jetbridge.AddService(nc, "jetbridge-conformance", "1.0.0",
		jetbridge.WithSubjectPrefix(env("JETBRIDGE_SUBJECT_PREFIX", jetbridge.DefaultSubjectPrefix)),
		jetbridge.WithConcurrency(concurrency),
		jetbridge.WithDescription("Jetbridge conformance handler (Go)"),
		jetbridge.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))),
	)
	if err != nil {
		return err
	}
	if err := useMiddleware(svc); err != nil {
		return err
	}
	h := &handlers{nc: nc, instance: instance}
	for taskType, fn := range h.all() {
		if err := svc.AddHandler(taskType, h.announced(fn)); err != nil {
			return err
		}
	}
	// The endpoints are live once the server has seen them.
	if err := nc.Flush(); err != nil {
		return err
	}
	fmt.Println("ready") // stdout is unbuffered in Go
	return svc.Serve(ctx)
}

// env returns the variable's value, or def when it is unset or empty.
func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
