// Command asyncjobs is the benchmark's asyncjobs baseline: it enqueues N
// no-op tasks with the choria asyncjobs client (the module pinned in go.mod,
// the same version interop/asyncjobs uses), then drains them with an
// asyncjobs processor running an in-process no-op handler, on the same
// nats-server the Jetbridge scenarios use. It prints one JSON object.
//
//	asyncjobs -server URL -queue BENCH -n 20000 [-enqueue-concurrency 100] [-concurrency 1000] [-timeout 90s]
//
// The drain is timed the way the Python runner times the dispatcher: the
// queue stream's message count is polled every 20 ms; the clock starts at
// the first poll that sees fewer than N items and stops at the first poll
// that sees none.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	aj "github.com/choria-io/asyncjobs"
	"github.com/nats-io/nats.go"
)

type quiet struct{}

func (quiet) Debugf(string, ...any) {}
func (quiet) Infof(string, ...any)  {}
func (quiet) Warnf(format string, v ...any) {
	fmt.Fprintf(os.Stderr, "warn: "+format+"\n", v...)
}
func (quiet) Errorf(format string, v ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", v...)
}

func main() {
	out, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "asyncjobs bench:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds()
}

func run() (map[string]any, error) {
	server := flag.String("server", nats.DefaultURL, "NATS URL")
	queue := flag.String("queue", "BENCH", "queue name")
	n := flag.Int("n", 20000, "tasks to enqueue and drain")
	enqConc := flag.Int("enqueue-concurrency", 100, "EnqueueTask calls in flight")
	conc := flag.Int("concurrency", 1000, "queue MaxConcurrent and ClientConcurrency")
	timeout := flag.Duration("timeout", 90*time.Second, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// asyncjobs refuses connections without old-style requests.
	nc, err := nats.Connect(*server, nats.UseOldRequestStyle(), nats.Name("jetbridge-bench-asyncjobs"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return nil, err
	}

	client, err := aj.NewClient(
		aj.NatsConn(nc), aj.CustomLogger(quiet{}),
		aj.WorkQueue(&aj.Queue{Name: *queue, MaxConcurrent: *conc, MaxRunTime: time.Minute, MaxTries: 10}),
		aj.ClientConcurrency(*conc),
	)
	if err != nil {
		return nil, err
	}

	// Enqueue: -enqueue-concurrency goroutines calling EnqueueTask (asyncjobs has no batch API).
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	payload := map[string]any{"n": 0, "kind": "noop", "data": "0123456789abcdef0123456789abcdef"}
	cpu0 := cpuSeconds()
	t0 := time.Now()
	for w := 0; w < *enqConc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(*n) {
					return
				}
				task, err := aj.NewTask("noop", payload)
				if err == nil {
					err = client.EnqueueTask(ctx, task)
				}
				if err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "enqueue:", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	enqSecs := time.Since(t0).Seconds()
	enqCPU := cpuSeconds() - cpu0
	enqueued := int64(*n) - failed.Load()

	stream := "CHORIA_AJ_Q_" + *queue
	count := func() (int64, error) {
		si, err := js.StreamInfo(stream)
		if err != nil {
			return 0, err
		}
		return int64(si.State.Msgs), nil
	}
	if c, err := count(); err != nil {
		return nil, err
	} else if c != enqueued {
		return nil, fmt.Errorf("queue holds %d items after enqueueing %d", c, enqueued)
	}

	// Drain: an asyncjobs processor with a no-op handler in this process.
	var handled atomic.Int64
	router := aj.NewTaskRouter()
	err = router.HandleFunc("noop", func(context.Context, aj.Logger, *aj.Task) (any, error) {
		handled.Add(1)
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- client.Run(runCtx, router) }()

	var start, end time.Time
	var atStart int64
	var cpuStart, cpuEnd float64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
poll:
	for {
		select {
		case <-ctx.Done():
			break poll
		case <-tick.C:
		}
		c, err := count()
		if err != nil {
			continue
		}
		now := time.Now()
		if start.IsZero() && c < enqueued {
			start, atStart, cpuStart = now, c, cpuSeconds()
		}
		if c == 0 {
			end, cpuEnd = now, cpuSeconds()
			break
		}
	}
	stopRun()
	select {
	case err := <-runErr:
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "run:", err)
		}
	case <-time.After(5 * time.Second):
	}
	out := map[string]any{
		"n": *n, "enqueued": enqueued, "enqueue_errors": failed.Load(), "enqueue_concurrency": *enqConc,
		"enqueue_seconds": enqSecs, "enqueue_tasks_per_s": float64(enqueued) / enqSecs,
		"enqueue_cpu_us_per_task": enqCPU * 1e6 / float64(max(enqueued, 1)),
		"concurrency": *conc, "handled": handled.Load(),
	}
	if end.IsZero() || start.IsZero() {
		out["error"] = "the queue did not drain before the timeout"
		return out, nil
	}
	drained := atStart
	secs := end.Sub(start).Seconds()
	out["drain_tasks"] = drained
	out["drain_seconds"] = secs
	out["drain_tasks_per_s"] = float64(drained) / secs
	out["drain_cpu_us_per_task"] = (cpuEnd - cpuStart) * 1e6 / float64(max(drained, 1))
	return out, nil
}
