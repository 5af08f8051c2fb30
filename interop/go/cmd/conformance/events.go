package main

import (
	"encoding/json"
	"log/slog"

	"github.com/nats-io/nats.go"
)

// eventsSubject is where the conformance suite watches what handlers do.
const eventsSubject = "jetbridge.conformance.events"

type event struct {
	Event    string `json:"event"`
	TaskID   string `json:"task_id"`
	Attempt  int    `json:"attempt"`
	Instance string `json:"instance"`
	Reason   string `json:"reason,omitempty"`
}

// publish sends an event on the handler's own connection, so that it
// reaches the server before the attempt's reply does.
func publish(nc *nats.Conn, e event) {
	data, err := json.Marshal(e)
	if err == nil {
		err = nc.Publish(eventsSubject, data)
	}
	if err != nil {
		slog.Error("conformance: event not sent", "event", e.Event, "error", err)
	}
}
