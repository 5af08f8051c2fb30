package jetbridge

import (
	"encoding/json"
	"fmt"
	"time"
)

// taskRequest is a task_request that passed every check of SPEC §3.3: the
// task for the handler plus what the service needs to run the attempt.
type taskRequest struct {
	task              Task
	token             string
	heartbeatSubject  string
	heartbeatInterval time.Duration
	// heartbeatAck is protocol 1.1's heartbeat_ack: heartbeats are sent as
	// requests, and an unanswered one fences the attempt.
	heartbeatAck  bool
	cancelSubject string
}

// decodeRequest makes the decisions of SPEC §3.3, steps 1 to 3, in order.
// On a rejection it returns the error to reply with and, when the body had
// a well-formed one, the attempt token to echo so the dispatcher can match
// the reply to its attempt.
func decodeRequest(data []byte) (req *taskRequest, token string, reject *Error) {
	o, err := parseObject(data)
	if err != nil {
		return nil, "", Terminate(CodeBadRequest, err.Error())
	}
	if t, err := o.token("attempt_token"); err == nil {
		token = t
	}
	if raw, ok := o["protocol"]; !ok {
		return nil, token, Retry(CodeUnsupportedProtocol, "missing protocol version", 0)
	} else if v, ok := jsonInteger(raw); !ok || v != protocolVersion {
		return nil, token, Retry(CodeUnsupportedProtocol, "unsupported protocol version "+string(raw), 0)
	}
	req, err = o.taskRequest()
	if err != nil {
		return nil, token, Terminate(CodeBadRequest, "invalid task_request: "+err.Error())
	}
	return req, token, nil
}

// taskRequest checks the object against task_request.schema.json and
// builds the request from it.
func (o object) taskRequest() (*taskRequest, error) {
	var (
		r   taskRequest
		t   = &r.task
		err error
		n   int64
	)
	if err = o.constant("type", typeTaskRequest); err != nil {
		return nil, err
	}
	if t.ID, err = o.name("task_id"); err != nil {
		return nil, err
	}
	if t.Type, err = o.name("task_type"); err != nil {
		return nil, err
	}
	if t.Queue, err = o.name("queue"); err != nil {
		return nil, err
	}
	if n, err = o.integer("attempt", 1); err != nil {
		return nil, err
	}
	t.Attempt = int(n)
	if n, err = o.integer("max_attempts", 0); err != nil {
		return nil, err
	}
	t.MaxAttempts = int(n)
	if t.Created, err = o.timestamp("created"); err != nil {
		return nil, err
	}
	if !o.has("deadline") {
		return nil, fmt.Errorf("deadline: missing")
	}
	if !isNull(o["deadline"]) {
		if t.Deadline, err = o.timestamp("deadline"); err != nil {
			return nil, err
		}
	}
	if r.token, err = o.token("attempt_token"); err != nil {
		return nil, err
	}
	if t.AttemptDeadline, err = o.timestamp("attempt_deadline"); err != nil {
		return nil, err
	}
	if n, err = o.integer("budget_ms", 0); err != nil {
		return nil, err
	}
	t.Budget = time.Duration(n) * time.Millisecond
	if r.heartbeatSubject, err = o.subject("heartbeat_subject"); err != nil {
		return nil, err
	}
	if n, err = o.integer("heartbeat_interval_ms", 0); err != nil {
		return nil, err
	}
	r.heartbeatInterval = time.Duration(n) * time.Millisecond
	// Optional: a 1.0 dispatcher omits it, which means false.
	if raw, ok := o["heartbeat_ack"]; ok {
		switch string(raw) {
		case "true":
			r.heartbeatAck = true
		case "false":
		default:
			return nil, fmt.Errorf("heartbeat_ack: must be a boolean")
		}
	}
	if r.cancelSubject, err = o.subject("cancel_subject"); err != nil {
		return nil, err
	}
	if t.ContentType, err = o.sized("content_type", 1, 255); err != nil {
		return nil, err
	}
	if err = o.payload(t); err != nil {
		return nil, err
	}
	if o.has("traceparent") {
		if t.Traceparent, err = o.matching("traceparent", traceparentRE, 0); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// payload fills in the task's payload as payload_encoding says.
func (o object) payload(t *Task) error {
	enc, err := o.str("payload_encoding")
	if err != nil {
		return err
	}
	raw, ok := o["payload"]
	if !ok {
		return fmt.Errorf("payload: missing")
	}
	switch enc {
	case encodingJSON:
		t.Payload = json.RawMessage(raw)
	case encodingBase64:
		s, err := o.str("payload")
		if err != nil {
			return err
		}
		if t.Payload, err = decodeBase64(s); err != nil {
			return fmt.Errorf("payload: not standard base64 with padding")
		}
		t.Binary = true
	default:
		return fmt.Errorf("payload_encoding: must be %q or %q, not %q", encodingJSON, encodingBase64, enc)
	}
	return nil
}
