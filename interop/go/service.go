package jetbridge

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"sync"

	"github.com/nats-io/nats.go"
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
	micro *microService
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

	mu         sync.Mutex
	handlers   map[string]HandlerFunc
	middleware []middleware
	stopping   bool

	counters  sync.Map // endpoint subject -> *counters
	closed    chan nats.Status
	stopOnce  sync.Once
	stopError error
	// draining is closed once the endpoints have stopped taking requests.
	draining chan struct{}
	// unregisterOnce ends the micro service once its attempts are done.
	unregisterOnce sync.Once
}

// AddService registers a micro service named name (letters, digits, - and
// _) at a SemVer version on nc. Its metadata says it speaks protocols 1 and
// 1.1, so the dispatcher and `nats micro info` can tell.
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
	metadata[metaProtocols] = protocolsAdvertised
	metadata[metaSDK] = "go/" + Version

	s := &Service{
		nc:       nc,
		opts:     o,
		log:      o.logger.With("service", name),
		sem:      make(chan struct{}, o.concurrency),
		handlers: map[string]HandlerFunc{},
		closed:   nc.StatusChanged(nats.CLOSED),
		draining: make(chan struct{}),
	}
	s.attempts, s.cancelAttempts = context.WithCancelCause(context.Background())
	svc, err := startMicro(nc, name, version, o.description, metadata, s.endpointStats)
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
	name := endpointName(taskType)
	for other := range s.handlers {
		if endpointName(other) == name {
			s.mu.Unlock()
			return fmt.Errorf("jetbridge: task types %q and %q would share the endpoint name %q: one service cannot serve both", other, taskType, name)
		}
	}
	s.handlers[taskType] = h
	s.mu.Unlock()

	// The micro calls run without s.mu: the micro service holds its own
	// lock while it calls endpointStats.
	subject := s.opts.subjectPrefix + "." + taskType
	c := &counters{}
	s.counters.Store(subject, c)
	err := s.micro.addEndpoint(name, subject,
		map[string]string{metaTaskType: taskType}, s.endpointHandler(c))
	if err == nil {
		// Ready means warm (SPEC §2): once AddHandler returns, the server
		// has the subscription. Without a connection now, nats.go sends it
		// on reconnecting.
		if ferr := s.nc.Flush(); ferr != nil {
			s.log.Warn("jetbridge: endpoint not yet confirmed by the server", "task_type", taskType, "error", ferr)
		}
	}
	if err != nil {
		s.mu.Lock()
		delete(s.handlers, taskType)
		s.mu.Unlock()
		s.counters.Delete(subject)
		return fmt.Errorf("jetbridge: adding endpoint for %q: %w", taskType, err)
	}
	return nil
}

// notEndpointName matches the characters a micro endpoint name may not have.
var notEndpointName = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// endpointName makes a task type a valid micro endpoint name (protocol 1.1
// rule 9): every character outside [A-Za-z0-9_-], such as the colons task
// types often have, becomes _. The subject keeps the type as it is.
func endpointName(taskType string) string {
	return notEndpointName.ReplaceAllString(taskType, "_")
}

// handler returns the handler for a task type; the body's task_type decides,
// not the subject the request came on (SPEC §3.1: the body is
// authoritative).
func (s *Service) handler(taskType string) HandlerFunc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handlers[taskType]
}
