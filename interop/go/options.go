package jetbridge

import (
	"fmt"
	"log/slog"
	"maps"
	"time"
)

const (
	// DefaultSubjectPrefix is the dispatcher's default route prefix: a task
	// of type T is requested on <prefix>.T.
	DefaultSubjectPrefix = "jetbridge.task"

	// DefaultConcurrency is how many attempts a service runs at once unless
	// told otherwise.
	DefaultConcurrency = 64
)

// Option configures a Service; pass options to [AddService].
type Option func(*options) error

type options struct {
	description   string
	metadata      map[string]string
	subjectPrefix string
	concurrency   int
	drainTimeout  time.Duration
	logger        *slog.Logger
}

func defaultOptions() options {
	return options{
		subjectPrefix: DefaultSubjectPrefix,
		concurrency:   DefaultConcurrency,
		logger:        slog.Default(),
	}
}

// WithSubjectPrefix sets the prefix of task subjects: a handler for type T
// listens on <prefix>.T. It must match the dispatcher's route table; the
// default is [DefaultSubjectPrefix].
func WithSubjectPrefix(prefix string) Option {
	return func(o *options) error {
		if prefix == "" || !subjectPattern.MatchString(prefix) {
			return fmt.Errorf("jetbridge: subject prefix %q is not a subject without wildcards", prefix)
		}
		o.subjectPrefix = prefix
		return nil
	}
}

// WithConcurrency sets how many attempts run at once across all of the
// service's handlers (default [DefaultConcurrency]). Further requests wait
// for a slot; one whose budget runs out, or that is cancelled, while it
// waits is answered without running.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("jetbridge: concurrency %d is less than 1", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithDrainTimeout bounds how long [Service.Serve] waits for running
// attempts once its context is done. When it runs out, their contexts are
// cancelled with cause [ErrDraining] and Serve waits for the handlers to
// return. Zero (the default) waits as long as they run; each is still
// bounded by its own attempt deadline.
func WithDrainTimeout(d time.Duration) Option {
	return func(o *options) error {
		o.drainTimeout = d
		return nil
	}
}

// WithDescription sets the micro service's description.
func WithDescription(description string) Option {
	return func(o *options) error {
		o.description = description
		return nil
	}
}

// WithMetadata adds to the micro service's metadata. The jetbridge.* keys
// are the library's and cannot be overridden.
func WithMetadata(metadata map[string]string) Option {
	return func(o *options) error {
		if o.metadata == nil {
			o.metadata = map[string]string{}
		}
		maps.Copy(o.metadata, metadata)
		return nil
	}
}

// WithLogger sets where the service logs what it cannot report in a reply:
// panics, failed publishes, ignored cancels. The default is slog.Default().
func WithLogger(logger *slog.Logger) Option {
	return func(o *options) error {
		if logger == nil {
			return fmt.Errorf("jetbridge: nil logger")
		}
		o.logger = logger
		return nil
	}
}
