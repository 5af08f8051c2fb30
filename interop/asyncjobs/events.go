package main

import (
	"fmt"
	"strings"
	"time"

	aj "github.com/choria-io/asyncjobs"
	"github.com/nats-io/nats.go"
)

// watchEvents prints each lifecycle event as asyncjobs' ParseEventJSON decodes it (or the error it returns).
func watchEvents(args []string) error {
	f := newFlags("watch-events")
	taskID := f.String("task", "", "only this task's events")
	until := f.String("until", "", "exit after an event with one of these states (comma separated)")
	count := f.Int("count", 0, "exit after this many events (0: no limit)")
	timeout := f.Duration("timeout", 60*time.Second, "exit after this long")
	f.Parse(args)

	nc, err := f.connect()
	if err != nil {
		return err
	}
	defer nc.Close()

	subject := aj.EventsSubjectWildcard
	if *taskID != "" {
		subject = fmt.Sprintf(aj.TaskStateChangeEventSubjectPattern, *taskID)
	}
	stopAt := map[string]bool{}
	for _, s := range strings.Split(*until, ",") {
		if s != "" {
			stopAt[s] = true
		}
	}

	ctx, cancel := signalContext(*timeout)
	defer cancel()
	seen := 0
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		seen++
		ev, kind, err := aj.ParseEventJSON(m.Data)
		if err != nil {
			emit(map[string]any{"error": err.Error(), "kind": kind, "raw": string(m.Data)})
		} else if e, ok := ev.(aj.TaskStateChangeEvent); ok {
			emit(map[string]any{
				"type": e.EventType, "event_id": e.EventID, "timestamp": e.TimeStamp.Format(time.RFC3339Nano),
				"task_id": e.TaskID, "state": e.State, "tries": e.Tries, "queue": e.Queue, "task_type": e.TaskType,
				"last_error": e.LastErr, "task_age_ns": e.Age.Nanoseconds(),
			})
			if stopAt[string(e.State)] {
				cancel()
			}
		} else {
			emit(map[string]any{"type": kind, "event": ev})
		}
		if *count > 0 && seen >= *count {
			cancel()
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	ready()
	<-ctx.Done()
	return nil
}
