package jetbridge

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// The service rides out a restart of its nats-server (protocol 1.1 rule
// 11): an attempt running across the restart still sends its reply, and a
// task sent after the restart is served, since the connection subscribes
// again.
func TestServiceSurvivesServerRestart(t *testing.T) {
	if _, err := os.Stat(natsServerBin()); err != nil {
		t.Skipf("no nats-server at %s (set NATS_SERVER_BIN)", natsServerBin())
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	stop, err := runServer(port)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stop() }()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	dial := func() (*nats.Conn, chan nats.Status) {
		nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc, nc.StatusChanged(nats.CONNECTED)
	}
	svcConn, svcUp := dial()
	client, clientUp := dial()
	h := &harness{t: t, svcConn: svcConn, client: client, prefix: "test." + nuid.Next(), name: "svc-" + nuid.Next()}
	if h.svc, err = AddService(svcConn, h.name, "1.0.0", WithSubjectPrefix(h.prefix)); err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}, 2), make(chan struct{})
	h.handle("work", func(ctx context.Context, task *Task) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return task.Attempt, nil
	})

	running := h.attempt("work", nil)
	runningReplies := h.send(running)
	<-started

	stop()
	if stop, err = runServer(port); err != nil {
		t.Fatal(err)
	}
	<-svcUp
	<-clientUp
	// Both connections have subscribed again once the server answers a
	// flush of each.
	for _, nc := range []*nats.Conn{svcConn, client} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	// The request sent before the restart has a reply inbox the client
	// subscribed to again.
	if r, msg := awaitReply(t, runningReplies, running.token); r.Status != "ok" {
		t.Errorf("attempt across the restart: %s", msg.Data)
	}
	after := h.attempt("work", nil)
	if r, msg := awaitReply(t, h.send(after), after.token); r.Status != "ok" {
		t.Errorf("attempt after the restart: %s", msg.Data)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.svc.Serve(ctx); err != nil {
		t.Errorf("Serve after the restart: %v", err)
	}
}
