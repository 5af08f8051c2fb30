package jetbridge

import (
	"fmt"
	"math"
)

// maxShortMessage is the limit on the message of a heartbeat or a cancel
// (heartbeat.schema.json, cancel.schema.json).
const maxShortMessage = 1024

type heartbeatBody struct {
	Type         string   `json:"type"`
	Protocol     int      `json:"protocol"`
	TaskID       string   `json:"task_id"`
	AttemptToken string   `json:"attempt_token"`
	Progress     *float64 `json:"progress,omitempty"`
	Message      string   `json:"message,omitempty"`
}

// encodeHeartbeat builds a heartbeat body. A progress outside 0..1 is a bug
// in the caller and is refused rather than sent: the dispatcher would drop
// the whole heartbeat, lease extension included. An over-long message only
// loses its tail.
func encodeHeartbeat(taskID, token string, progress *float64, message string) ([]byte, error) {
	if progress != nil && (math.IsNaN(*progress) || *progress < 0 || *progress > 1) {
		return nil, fmt.Errorf("jetbridge: heartbeat progress %v is not a fraction from 0 to 1", *progress)
	}
	return marshal(heartbeatBody{
		Type:         typeHeartbeat,
		Protocol:     protocolVersion,
		TaskID:       taskID,
		AttemptToken: token,
		Progress:     progress,
		Message:      truncate(message, maxShortMessage),
	})
}

// truncate cuts s to at most n characters (not bytes: the schemas count
// characters).
func truncate(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
