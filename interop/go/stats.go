package jetbridge

import (
	"sync/atomic"

	"github.com/nats-io/nats.go/micro"
)

// counters are one endpoint's attempt outcomes. micro's own stats cannot
// count them: it measures the endpoint callback, which only hands attempts
// to goroutines, so its num_errors counts rejected requests alone.
type counters struct {
	running, ok, retry, terminate atomic.Int64
}

// endpointStatsData is the "data" of an endpoint in `nats micro stats`.
type endpointStatsData struct {
	Running   int64 `json:"running"`
	OK        int64 `json:"ok"`
	Retry     int64 `json:"retry"`
	Terminate int64 `json:"terminate"`
}

func (c *counters) record(status string) {
	switch status {
	case "ok":
		c.ok.Add(1)
	case "retry":
		c.retry.Add(1)
	case "terminate":
		c.terminate.Add(1)
	}
}

// endpointStats is the micro StatsHandler.
func (s *Service) endpointStats(e *micro.Endpoint) any {
	v, ok := s.counters.Load(e.Subject)
	if !ok {
		return nil
	}
	c := v.(*counters)
	return endpointStatsData{
		Running:   c.running.Load(),
		OK:        c.ok.Load(),
		Retry:     c.retry.Load(),
		Terminate: c.terminate.Load(),
	}
}
