// Command noop is the benchmark's Go handler: a Jetbridge handler service
// (the interop/go library) that answers every attempt of the task types it
// is given, under one subject prefix, with an empty result at once.
//
//	noop -server nats://127.0.0.1:4222 [-prefix jetbridge.task] [-types noop,other] [-concurrency 1000]
//
// It prints "ready" once its endpoints are live, and drains on SIGTERM or
// SIGINT. The library registers one endpoint per task type (it has no
// catch-all endpoint), so "any task type" means every type named in -types.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/nats-io/nats.go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "noop:", err)
		os.Exit(1)
	}
}

func run() error {
	server := flag.String("server", nats.DefaultURL, "NATS URL")
	prefix := flag.String("prefix", jetbridge.DefaultSubjectPrefix, "task subject prefix")
	types := flag.String("types", "noop", "comma-separated task types to answer")
	concurrency := flag.Int("concurrency", 1000, "attempts at once")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	nc, err := nats.Connect(*server, nats.Name("jetbridge-bench-noop-go"))
	if err != nil {
		return err
	}
	defer nc.Close()

	svc, err := jetbridge.AddService(nc, "jetbridge-bench-noop", "1.0.0",
		jetbridge.WithSubjectPrefix(*prefix),
		jetbridge.WithConcurrency(*concurrency),
		jetbridge.WithDescription("Jetbridge benchmark no-op handler (Go)"),
		jetbridge.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	)
	if err != nil {
		return err
	}
	noop := func(context.Context, *jetbridge.Task) (any, error) { return nil, nil }
	for _, t := range strings.Split(*types, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if err := svc.AddHandler(t, noop); err != nil {
			return err
		}
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	fmt.Println("ready")
	return svc.Serve(ctx)
}
