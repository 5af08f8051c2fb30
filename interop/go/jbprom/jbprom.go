// Package jbprom measures Jetbridge handlers with Prometheus: a
// [jetbridge.Middleware] that counts and times every attempt by task type
// and outcome, for services that expose /metrics (promhttp.Handler).
//
// It is a module of its own, so services that do not export metrics never
// download the Prometheus client. Its metrics are those of the Python SDK's
// prometheus_metrics(), so one dashboard serves handlers in any language:
//
//   - jetbridge_handler_attempts_total{type,outcome}: attempts that ended;
//   - jetbridge_handler_duration_seconds{type,outcome}: their duration;
//   - jetbridge_handler_in_progress{type}: attempts running now.
//
// The outcome is ok, retry or terminate (a [jetbridge.Error], by its
// Terminal flag), cancelled (the handler gave up because its context ended:
// the service replies retry with code cancelled) or error (any other error
// or a panic: the service replies retry with code handler_error).
//
//	svc.Use(jbprom.Middleware()) // registers in prometheus.DefaultRegisterer
//	http.Handle("/metrics", promhttp.Handler())
package jbprom

import (
	"context"
	"errors"
	"time"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/prometheus/client_golang/prometheus"
)

// Buckets are the duration histogram's bucket bounds in seconds, the Python
// SDK's: from a millisecond to an hour, since handlers range from cache
// lookups to long reports.
var Buckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// The outcomes of an attempt, the values of the outcome label.
const (
	OutcomeOK        = "ok"
	OutcomeRetry     = "retry"
	OutcomeTerminate = "terminate"
	OutcomeError     = "error"
	OutcomeCancelled = "cancelled"
)

type config struct {
	registerer prometheus.Registerer
}

// Option configures [Middleware].
type Option func(*config)

// WithRegisterer registers the metrics in reg instead of
// prometheus.DefaultRegisterer.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) { c.registerer = reg }
}

// Middleware returns the metrics middleware. Calling it again with the same
// registerer (two services of one process) shares the metrics already
// registered there. Like prometheus.MustRegister, it panics when the
// registerer holds other metrics of the same names with other labels.
func Middleware(opts ...Option) jetbridge.Middleware {
	c := config{registerer: prometheus.DefaultRegisterer}
	for _, o := range opts {
		o(&c)
	}
	attempts := register(c.registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jetbridge_handler_attempts_total",
		Help: "Handler attempts that ended, by task type and outcome",
	}, []string{"type", "outcome"}))
	duration := register(c.registerer, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "jetbridge_handler_duration_seconds",
		Help:    "Handler attempt duration by outcome",
		Buckets: Buckets,
	}, []string{"type", "outcome"}))
	inProgress := register(c.registerer, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jetbridge_handler_in_progress",
		Help: "Handler attempts running now",
	}, []string{"type"}))
	return func(next jetbridge.HandlerFunc) jetbridge.HandlerFunc {
		return func(ctx context.Context, t *jetbridge.Task) (result any, err error) {
			running := inProgress.WithLabelValues(t.Type)
			running.Inc()
			start := time.Now()
			returned := false
			// Deferred so that a panic (recovered further out, and replied
			// as handler_error) is counted too, as an error.
			defer func() {
				running.Dec()
				outcome := OutcomeError
				if returned {
					outcome = Outcome(ctx, err)
				}
				attempts.WithLabelValues(t.Type, outcome).Inc()
				duration.WithLabelValues(t.Type, outcome).Observe(time.Since(start).Seconds())
			}()
			result, err = next(ctx, t)
			returned = true
			return result, err
		}
	}
}

// Outcome is how an attempt that returned err ended, as the outcome label
// says it; ctx is the context the attempt ran with.
func Outcome(ctx context.Context, err error) string {
	var jerr *jetbridge.Error
	switch {
	case err == nil:
		return OutcomeOK
	case errors.As(err, &jerr):
		if jerr.Terminal {
			return OutcomeTerminate
		}
		return OutcomeRetry
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Cause(ctx))):
		return OutcomeCancelled
	default:
		return OutcomeError
	}
}

// register registers c in reg, or returns the same collector registered
// there before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			if existing, ok := already.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
