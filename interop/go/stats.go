package jetbridge

import (
	"sync/atomic"
)

// counters are one endpoint's attempt outcomes, shown as the endpoint's
// data in `nats micro stats` next to micro's num_requests and num_errors
// (which count retry and terminate replies and rejections as errors).
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

// endpointStats is the data of the endpoint on subject.
func (s *Service) endpointStats(subject string) any {
	v, ok := s.counters.Load(subject)
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
