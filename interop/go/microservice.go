package jetbridge

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
)

// microService answers the NATS micro protocol (PING, INFO and STATS on
// $SRV.*) for a Service, with the wire types of nats.go's micro package.
//
// It replaces micro.AddService because micro measures an endpoint by its
// callback, which here only hands each attempt to a goroutine: with micro,
// `nats micro stats` showed 0 errors after retry and terminate replies and
// a processing time of microseconds for handlers that ran for seconds.
// Here an endpoint's stats are recorded when the attempt's reply is sent
// (protocol 1.1 rule 10).
type microService struct {
	nc          *nats.Conn
	identity    micro.ServiceIdentity
	description string
	started     time.Time
	data        func(subject string) any

	mu        sync.Mutex
	endpoints []*microEndpoint
	verbSubs  []*nats.Subscription
	stopped   bool
}

// microEndpoint is one endpoint and its stats; the stats are guarded by
// the service's mu.
type microEndpoint struct {
	info micro.EndpointInfo
	sub  *nats.Subscription

	requests   int
	errors     int
	lastError  string
	processing time.Duration
}

// The name and version rules of the micro protocol (those of nats.go's
// micro.Config).
var (
	microNamePattern = regexp.MustCompile(`^[A-Za-z0-9\-_]+$`)
	semVerPattern    = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

// startMicro checks the service's name and version and subscribes to the
// PING, INFO and STATS subjects (all services, this name, this instance).
func startMicro(nc *nats.Conn, name, version, description string, metadata map[string]string, data func(string) any) (*microService, error) {
	if !microNamePattern.MatchString(name) {
		return nil, fmt.Errorf("%w: service name %q: letters, digits, - and _ only", micro.ErrConfigValidation, name)
	}
	if !semVerPattern.MatchString(version) {
		return nil, fmt.Errorf("%w: version %q is not a semantic version", micro.ErrConfigValidation, version)
	}
	m := &microService{
		nc:          nc,
		identity:    micro.ServiceIdentity{Name: name, ID: nuid.Next(), Version: version, Metadata: metadata},
		description: description,
		started:     time.Now().UTC(),
		data:        data,
	}
	verbs := map[micro.Verb]func() any{
		micro.PingVerb:  func() any { return micro.Ping{ServiceIdentity: m.identity, Type: micro.PingResponseType} },
		micro.InfoVerb:  func() any { return m.info() },
		micro.StatsVerb: func() any { return m.stats() },
	}
	for verb, answer := range verbs {
		for _, scope := range [][2]string{{"", ""}, {name, ""}, {name, m.identity.ID}} {
			subject, err := micro.ControlSubject(verb, scope[0], scope[1])
			if err == nil {
				err = m.subscribeVerb(subject, answer)
			}
			if err != nil {
				m.stop()
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *microService) subscribeVerb(subject string, answer func() any) error {
	sub, err := m.nc.Subscribe(subject, func(msg *nats.Msg) {
		// The answers are plain structs: they always encode.
		body, _ := json.Marshal(answer())
		_ = msg.Respond(body) // a request without a reply subject gets nothing
	})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", subject, err)
	}
	m.mu.Lock()
	m.verbSubs = append(m.verbSubs, sub)
	m.mu.Unlock()
	return nil
}

// addEndpoint subscribes handle to subject in the queue group. handle
// reports each request's outcome with [microEndpoint.record].
func (m *microService) addEndpoint(name, subject string, metadata map[string]string, handle func(*microEndpoint, *nats.Msg)) error {
	if !microNamePattern.MatchString(name) {
		return fmt.Errorf("%w: invalid endpoint name %q", micro.ErrConfigValidation, name)
	}
	e := &microEndpoint{info: micro.EndpointInfo{Name: name, Subject: subject, QueueGroup: queueGroup, Metadata: metadata}}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return ErrStopped
	}
	sub, err := m.nc.QueueSubscribe(subject, queueGroup, func(msg *nats.Msg) { handle(e, msg) })
	if err != nil {
		return err
	}
	e.sub = sub
	m.endpoints = append(m.endpoints, e)
	return nil
}

// record counts one answered request: its time from receipt to reply, and
// failure, the micro error text ("code:description"), when it failed.
func (m *microService) record(e *microEndpoint, took time.Duration, failure string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.requests++
	e.processing += took
	if failure != "" {
		e.errors++
		e.lastError = failure
	}
}

func (m *microService) info() micro.Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	endpoints := make([]micro.EndpointInfo, 0, len(m.endpoints))
	for _, e := range m.endpoints {
		endpoints = append(endpoints, e.info)
	}
	return micro.Info{ServiceIdentity: m.identity, Type: micro.InfoResponseType, Description: m.description, Endpoints: endpoints}
}

func (m *microService) stats() micro.Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	stats := micro.Stats{ServiceIdentity: m.identity, Type: micro.StatsResponseType, Started: m.started, Endpoints: []*micro.EndpointStats{}}
	for _, e := range m.endpoints {
		s := &micro.EndpointStats{
			Name: e.info.Name, Subject: e.info.Subject, QueueGroup: e.info.QueueGroup,
			NumRequests: e.requests, NumErrors: e.errors, LastError: e.lastError, ProcessingTime: e.processing,
		}
		if e.requests > 0 {
			s.AverageProcessingTime = e.processing / time.Duration(e.requests)
		}
		if m.data != nil {
			s.Data, _ = json.Marshal(m.data(e.info.Subject))
		}
		stats.Endpoints = append(stats.Endpoints, s)
	}
	return stats
}

// drainEndpoints stops the endpoints taking requests: the server routes new
// ones to other replicas, and those already delivered are still handled.
func (m *microService) drainEndpoints() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	for _, e := range m.endpoints {
		if err := e.sub.Drain(); err != nil && err != nats.ErrConnectionClosed && err != nats.ErrBadSubscription {
			return fmt.Errorf("draining %s: %w", e.info.Subject, err)
		}
	}
	return nil
}

// stop unsubscribes everything: the service is gone from `nats micro ls`.
func (m *microService) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	for _, e := range m.endpoints {
		_ = e.sub.Unsubscribe()
	}
	for _, sub := range m.verbSubs {
		_ = sub.Unsubscribe()
	}
}
