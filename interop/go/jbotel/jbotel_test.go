package jbotel

import (
	"context"
	"testing"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, false},
	} {
		for _, name := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
			t.Setenv(name, c.env[name])
		}
		if got := Enabled(); got != c.want {
			t.Errorf("Enabled() with %v = %v, want %v", c.env, got, c.want)
		}
	}
}

func TestMiddlewareContinuesTheTraceAndRecordsTheOutcome(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	provider := trace.NewTracerProvider(trace.WithSpanProcessor(rec))
	mw := Middleware(WithTracerProvider(provider))
	task := &jetbridge.Task{ID: "t1", Type: "email:send", Queue: "Q", Attempt: 2,
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	_, err := mw(func(ctx context.Context, _ *jetbridge.Task) (any, error) {
		return nil, jetbridge.Retry("busy", "try later", 0)
	})(context.Background(), task)
	if err == nil {
		t.Fatal("the handler's error was lost")
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("got %d spans", len(spans))
	}
	s := spans[0]
	if s.Name() != "process email:send" || s.Parent().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		s.Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span %q parent %v", s.Name(), s.Parent())
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["jetbridge.outcome"] != "retry" || attrs["jetbridge.error.code"] != "busy" || attrs["jetbridge.attempt"] != "2" {
		t.Errorf("attributes %v", attrs)
	}
}
