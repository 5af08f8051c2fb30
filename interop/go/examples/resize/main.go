// Command resize is an example Jetbridge handler: it serves the task type
// image:resize, which scales a PNG or JPEG image to a given width and
// returns it as PNG.
//
//	NATS_URL=nats://127.0.0.1:4222 go run ./examples/resize
//	jetbridge enqueue image:resize '{"image": "<base64 PNG>", "width": 64}'
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/nats-io/nats.go"
)

func main() {
	if err := run(); err != nil {
		slog.Error("resize", "error", err)
		os.Exit(1)
	}
}

func run() error {
	// SIGTERM (or Ctrl-C) drains: no new tasks, running ones finish.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url, nats.Name("resize"), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()

	svc, err := jetbridge.AddService(nc, "resize", "1.0.0",
		jetbridge.WithConcurrency(4), // resizing is CPU-bound
		jetbridge.WithDrainTimeout(30*time.Second),
	)
	if err != nil {
		return err
	}
	if err := svc.AddHandler("image:resize", resize); err != nil {
		return err
	}
	fmt.Println("resize: serving image:resize; Ctrl-C to stop")
	return svc.Serve(ctx)
}
