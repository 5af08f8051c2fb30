package jetbridge

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// HandlerFunc runs one attempt of a task. ctx expires at the attempt's
// deadline and is cancelled when the dispatcher cancels the attempt (see
// [CancelError]). Return a result ([Bytes] or []byte for binary, anything
// else is encoded as JSON) or an error: [Retry] and [Terminate] choose the
// outcome, any other error asks for a retry with code [CodeHandlerError].
type HandlerFunc func(ctx context.Context, t *Task) (any, error)

// Service is a Jetbridge handler service: a NATS micro service with one
// endpoint per task type. Create it with [AddService], register handlers
// with [Service.AddHandler], then [Service.Serve].
type Service struct {
	nc    *nats.Conn
	micro micro.Service
	opts  options
	log   *slog.Logger

	// sem bounds running attempts: nats.go micro calls an endpoint's
	// handler serially, so each attempt runs in a goroutine of its own,
	// and holds a slot of sem while its handler runs.
	sem chan struct{}
	// inflight counts accepted attempts until their reply is sent.
	inflight sync.WaitGroup
	// attempts is the parent of every attempt's context; cancelAttempts
	// ends them all when the drain timeout runs out.
	attempts       context.Context
	cancelAttempts context.CancelCauseFunc

	mu       sync.Mutex
	handlers map[string]HandlerFunc
	stopping bool

	counters  sync.Map // endpoint subject -> *counters
	done      chan struct{}
	doneOnce  sync.Once
	stopOnce  sync.Once
	stopError error
}

// AddService registers a micro service named name (letters, digits, - and
// _) at a SemVer version on nc. Its metadata says it speaks protocol 1, so
// the dispatcher and `nats micro info` can tell.
func AddService(nc *nats.Conn, name, version string, opts ...Option) (*Service, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	metadata := maps.Clone(o.metadata)
	if metadata == nil {
		metadata = map[string]string{}
	}
	metadata[metaProtocols] = fmt.Sprint(protocolVersion)
	metadata[metaSDK] = "go/" + Version

	s := &Service{
		nc:       nc,
		opts:     o,
		log:      o.logger.With("service", name),
		sem:      make(chan struct{}, o.concurrency),
		handlers: map[string]HandlerFunc{},
		done:     make(chan struct{}),
	}
	s.attempts, s.cancelAttempts = context.WithCancelCause(context.Background())
	svc, err := micro.AddService(nc, micro.Config{
		Name:         name,
		Version:      version,
		Description:  o.description,
		Metadata:     metadata,
		QueueGroup:   queueGroup,
		StatsHandler: s.endpointStats,
		DoneHandler:  func(micro.Service) { s.doneOnce.Do(func() { close(s.done) }) },
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			s.log.Error("jetbridge: subscription error", "subject", err.Subject, "error", err.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jetbridge: adding micro service: %w", err)
	}
	s.micro = svc
	return s, nil
}

// AddHandler runs h for every attempt of taskType. It adds a micro endpoint
// on <prefix>.<taskType> in the queue group "jetbridge", so replicas share
// the load.
func (s *Service) AddHandler(taskType string, h HandlerFunc) error {
	if !namePattern.MatchString(taskType) || len(taskType) > 256 {
		return fmt.Errorf("jetbridge: task type %q does not match %s", taskType, namePattern)
	}
	if h == nil {
		return fmt.Errorf("jetbridge: nil handler for %q", taskType)
	}
	s.mu.Lock()
	switch {
	case s.stopping:
		s.mu.Unlock()
		return ErrStopped
	case s.handlers[taskType] != nil:
		s.mu.Unlock()
		return fmt.Errorf("jetbridge: a handler for %q is already registered", taskType)
	}
	s.handlers[taskType] = h
	s.mu.Unlock()

	// The micro calls run without s.mu: micro holds its own lock while it
	// calls endpointStats, which must not wait for ours.
	subject := s.opts.subjectPrefix + "." + taskType
	c := &counters{}
	s.counters.Store(subject, c)
	err := s.micro.AddEndpoint(endpointName(taskType), s.endpointHandler(c),
		micro.WithEndpointSubject(subject),
		micro.WithEndpointMetadata(map[string]string{metaTaskType: taskType}),
	)
	if err != nil {
		s.mu.Lock()
		delete(s.handlers, taskType)
		s.mu.Unlock()
		s.counters.Delete(subject)
		return fmt.Errorf("jetbridge: adding endpoint for %q: %w", taskType, err)
	}
	return nil
}

// endpointName makes a task type a valid micro endpoint name, which may not
// contain the colons task types often do.
func endpointName(taskType string) string {
	return strings.ReplaceAll(taskType, ":", "_")
}

// handler returns the handler for a task type; the body's task_type decides,
// not the subject the request came on (SPEC §3.1: the body is
// authoritative).
func (s *Service) handler(taskType string) HandlerFunc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handlers[taskType]
}
