package jbprom

import (
	"context"
	"os"
	"strings"
	"testing"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// run runs one attempt of taskType through mw, the handler returning err.
func run(mw jetbridge.Middleware, taskType string, err error) {
	_, _ = mw(func(context.Context, *jetbridge.Task) (any, error) {
		return nil, err
	})(context.Background(), &jetbridge.Task{ID: "t", Type: taskType, Queue: "Q", Attempt: 1})
}

func TestMiddlewareCountsAttemptsByTypeAndOutcome(t *testing.T) {
	reg := prometheus.NewRegistry()
	mw := Middleware(WithRegisterer(reg))
	run(mw, "email:send", nil)
	run(mw, "email:send", nil)
	run(mw, "email:send", jetbridge.Retry("smtp_busy", "try later", 0))
	run(mw, "email:send", jetbridge.Terminate("bad_address", "no such mailbox"))
	func() {
		defer func() { _ = recover() }() // the service's own Recover is further out
		_, _ = mw(func(context.Context, *jetbridge.Task) (any, error) {
			panic("boom")
		})(context.Background(), &jetbridge.Task{ID: "p", Type: "report:build"})
	}()
	// A second middleware on the same registry (another service) shares the metrics. context.Canceled
	// while the attempt's context is live is the handler's own error, not a cancel.
	run(Middleware(WithRegisterer(reg)), "report:build", context.Canceled)

	want := `
# HELP jetbridge_handler_attempts_total Handler attempts that ended, by task type and outcome
# TYPE jetbridge_handler_attempts_total counter
jetbridge_handler_attempts_total{outcome="error",type="report:build"} 2
jetbridge_handler_attempts_total{outcome="ok",type="email:send"} 2
jetbridge_handler_attempts_total{outcome="retry",type="email:send"} 1
jetbridge_handler_attempts_total{outcome="terminate",type="email:send"} 1
# HELP jetbridge_handler_in_progress Handler attempts running now
# TYPE jetbridge_handler_in_progress gauge
jetbridge_handler_in_progress{type="email:send"} 0
jetbridge_handler_in_progress{type="report:build"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"jetbridge_handler_attempts_total", "jetbridge_handler_in_progress"); err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount(reg, "jetbridge_handler_duration_seconds"); got != 4 {
		t.Errorf("%d duration series, want 4 (ok, retry, terminate, error)", got)
	}
}

func TestOutcome(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		ctx  context.Context
		err  error
		want string
	}{
		{context.Background(), nil, OutcomeOK},
		{context.Background(), jetbridge.Retry("busy", "", 0), OutcomeRetry},
		{context.Background(), jetbridge.Terminate("bad", ""), OutcomeTerminate},
		{cancelled, context.Canceled, OutcomeCancelled},
		{context.Background(), context.Canceled, OutcomeError},
		{context.Background(), context.DeadlineExceeded, OutcomeError},
	} {
		if got := Outcome(c.ctx, c.err); got != c.want {
			t.Errorf("Outcome(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestInProgressWhileRunning(t *testing.T) {
	reg := prometheus.NewRegistry()
	mw := Middleware(WithRegisterer(reg))
	var during float64
	_, _ = mw(func(context.Context, *jetbridge.Task) (any, error) {
		g, _ := reg.Gather()
		for _, f := range g {
			if f.GetName() == "jetbridge_handler_in_progress" {
				during = f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return nil, nil
	})(context.Background(), &jetbridge.Task{Type: "x"})
	if during != 1 {
		t.Errorf("in progress during the attempt = %v, want 1", during)
	}
}

// TestGuideSampleIsTheExample keeps the guide's sample the code that Example compiles.
func TestGuideSampleIsTheExample(t *testing.T) {
	guide, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	const start = "```go\n// after AddService, before Serve:\nsvc.Use(jbprom.Middleware())\n"
	i := strings.Index(string(guide), start)
	if i < 0 {
		t.Fatal("README.md has no Metrics sample")
	}
	sample := string(guide)[i+len("```go\n"):]
	sample = sample[:strings.Index(sample, "```")]
	indented := "\t" + strings.ReplaceAll(strings.TrimSuffix(sample, "\n"), "\n", "\n\t")
	if !strings.Contains(string(example), indented) {
		t.Errorf("example_test.go does not contain the guide's sample:\n%s", indented)
	}
}
