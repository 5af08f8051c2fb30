package main

import (
	"encoding/json"
	"fmt"
	"time"

	aj "github.com/choria-io/asyncjobs"
	"github.com/nats-io/nats.go"
)

// rrHandler is a remote handler for asyncjobs' request-reply callout. asyncjobs ships only the calling side
// (request_reply_handler.go), so this is the handler its docs describe, built from its own constants: it listens
// on RequestReplySubjectForTaskType(type) in a queue group, decodes the body as an asyncjobs Task, and answers
// with an empty-header reply (success, the body is the result), AJ-Error (retry) or AJ-Terminate (terminate).
func rrHandler(args []string) error {
	f := newFlags("rr-handler")
	taskType := f.String("type", "", "task type ('' is asyncjobs' catch-all)")
	mode := f.String("mode", "ok", "ok, flaky (AJ-Error on try 1), fail (always AJ-Error), terminate (AJ-Terminate)")
	count := f.Int("count", 0, "exit after this many requests (0: until signalled)")
	timeout := f.Duration("timeout", 0, "exit after this long (0: never)")
	f.Parse(args)

	nc, err := f.connect()
	if err != nil {
		return err
	}
	defer nc.Close()

	ctx, cancel := signalContext(*timeout)
	defer cancel()
	handled := 0
	subject := aj.RequestReplySubjectForTaskType(*taskType)
	sub, err := nc.QueueSubscribe(subject, "asyncjobs", func(m *nats.Msg) {
		reply, seen := answer(m, *mode)
		seen["subject"] = m.Subject
		emit(seen)
		if err := m.RespondMsg(reply); err != nil {
			emit(map[string]any{"error": err.Error()})
		}
		handled++
		if *count > 0 && handled >= *count {
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

// answer decides the reply to one callout and reports what the request carried.
func answer(m *nats.Msg, mode string) (*nats.Msg, map[string]any) {
	seen := map[string]any{
		"content_type": m.Header.Get(aj.RequestReplyContentTypeHeader),
		"deadline":     m.Header.Get(aj.RequestReplyDeadlineHeader),
	}
	reply := nats.NewMsg(m.Reply)
	if d, err := time.Parse(time.RFC3339, seen["deadline"].(string)); err == nil {
		seen["deadline_in_ms"] = time.Until(d).Milliseconds()
	} else {
		seen["deadline_error"] = err.Error()
	}

	var task aj.Task
	if err := json.Unmarshal(m.Data, &task); err != nil {
		seen["decode_error"] = err.Error()
		reply.Header.Set(aj.RequestReplyTerminateError, "cannot decode task: "+err.Error())
		return reply, seen
	}
	seen["task_id"], seen["type"], seen["queue"] = task.ID, task.Type, task.Queue
	seen["state"], seen["tries"], seen["max_tries"] = task.State, task.Tries, task.MaxTries
	seen["payload"] = json.RawMessage(orNull(task.Payload))

	switch {
	case mode == "terminate":
		reply.Header.Set(aj.RequestReplyTerminateError, "refused by remote handler")
	case mode == "fail" || (mode == "flaky" && task.Tries == 1):
		reply.Header.Set(aj.RequestReplyError, fmt.Sprintf("remote failure on try %d", task.Tries))
	default:
		reply.Data, _ = json.Marshal(map[string]any{"remote": true, "task_id": task.ID, "tries": task.Tries})
	}
	return reply, seen
}
