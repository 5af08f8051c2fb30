// Package jbotel traces Jetbridge handlers with OpenTelemetry: a
// [jetbridge.Middleware] that continues the dispatcher's trace, and OTLP/HTTP
// export set up from the standard OTEL_* environment variables.
//
// It is a module of its own, so services that do not trace never download
// the OpenTelemetry SDK.
//
// The dispatcher sends each attempt's W3C traceparent in the request; the
// middleware starts a server span "process <type>" as its child, with the
// task's id, type, queue and attempt, and records how the attempt ended
// (jetbridge.outcome: complete, retry or terminate, with jetbridge.error.code
// and an error status). The span is in the handler's context, so spans the
// handler starts from ctx are its children.
//
//	shutdown, err := jbotel.Setup(ctx, "mailer") // no-op unless OTEL_* asks for export
//	if err != nil { ... }
//	defer shutdown(context.Background())
//	svc.Use(jbotel.Middleware())
package jbotel

import (
	"context"
	"errors"
	"os"
	"strings"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of the middleware's spans.
const Scope = "github.com/jetbridge/jetbridge/interop/go/jbotel"

// Enabled reports whether the environment asks for trace export:
// OTEL_TRACES_EXPORTER set to anything but "none", or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set;
// never when OTEL_SDK_DISABLED is "true". The dispatcher and every Jetbridge
// library apply the same rule.
func Enabled() bool {
	get := func(name string) string { return strings.TrimSpace(os.Getenv(name)) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	if exporter := get("OTEL_TRACES_EXPORTER"); exporter != "" {
		return !strings.EqualFold(exporter, "none")
	}
	return get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs a global tracer provider that batches spans to OTLP/HTTP
// (configured by the OTEL_EXPORTER_OTLP_* and OTEL_BSP_* variables) when
// [Enabled]; otherwise it installs nothing. serviceName is used unless
// OTEL_SERVICE_NAME names the service. Call the returned function before
// exiting to send what is left; it is never nil.
func Setup(ctx context.Context, serviceName string) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if !Enabled() {
		return noop, nil
	}
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		return noop, err
	}
	res, err := resource.Merge(
		resource.NewSchemaless(attribute.String("service.name", serviceName)),
		resource.Environment(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return noop, err
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(provider)
	return provider.Shutdown, nil
}

type config struct {
	provider trace.TracerProvider
}

// Option configures [Middleware].
type Option func(*config)

// WithTracerProvider makes the middleware use provider instead of the global
// one.
func WithTracerProvider(provider trace.TracerProvider) Option {
	return func(c *config) { c.provider = provider }
}

// Middleware returns the tracing middleware: one server span per attempt,
// the child of the request's traceparent. With no SDK installed the spans
// are no-ops.
func Middleware(opts ...Option) jetbridge.Middleware {
	var c config
	for _, o := range opts {
		o(&c)
	}
	tc := propagation.TraceContext{}
	return func(next jetbridge.HandlerFunc) jetbridge.HandlerFunc {
		return func(ctx context.Context, t *jetbridge.Task) (any, error) {
			provider := c.provider
			if provider == nil {
				provider = otel.GetTracerProvider()
			}
			if t.Traceparent != "" {
				ctx = tc.Extract(ctx, propagation.MapCarrier{"traceparent": t.Traceparent})
			}
			ctx, span := provider.Tracer(Scope).Start(ctx, "process "+t.Type,
				trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(
					attribute.String("messaging.system", "jetbridge"),
					attribute.String("jetbridge.task.id", t.ID),
					attribute.String("jetbridge.task.type", t.Type),
					attribute.String("jetbridge.queue", t.Queue),
					attribute.Int("jetbridge.attempt", t.Attempt),
				))
			defer span.End()
			result, err := next(ctx, t)
			var jerr *jetbridge.Error
			switch {
			case err == nil:
				// Status stays unset on success, as OpenTelemetry asks of instrumentation libraries.
				span.SetAttributes(attribute.String("jetbridge.outcome", "complete"))
			case errors.As(err, &jerr):
				outcome := "retry"
				if jerr.Terminal {
					outcome = "terminate"
				}
				span.SetAttributes(attribute.String("jetbridge.outcome", outcome),
					attribute.String("jetbridge.error.code", jerr.Code))
				span.SetStatus(codes.Error, jerr.Error())
			default:
				span.RecordError(err)
				span.SetAttributes(attribute.String("jetbridge.outcome", "retry"),
					attribute.String("jetbridge.error.code", "handler_error"))
				span.SetStatus(codes.Error, err.Error())
			}
			return result, err
		}
	}
}
