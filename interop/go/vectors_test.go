package jetbridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// vectorsDir holds the protocol's shared test vectors; each file's
// description says how to read its cases.
const vectorsDir = "../../protocol/vectors"

type vectorFile struct {
	Message      string       `json:"message"`
	AttemptToken string       `json:"attempt_token"`
	Cases        []vectorCase `json:"cases"`
}

type vectorCase struct {
	Name        string            `json:"name"`
	Body        json.RawMessage   `json:"body"`
	BodyText    *string           `json:"body_text"`
	Headers     map[string]string `json:"headers"`
	Intent      json.RawMessage   `json:"intent"`
	SchemaValid *bool             `json:"schema_valid"`
	Expect      json.RawMessage   `json:"expect"`
}

// data is the case's message as it travels: body_text is sent raw.
func (c vectorCase) data() []byte {
	if c.BodyText != nil {
		return []byte(*c.BodyText)
	}
	return c.Body
}

func loadVectors(t *testing.T, message string) vectorFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(vectorsDir, message+".json"))
	if err != nil {
		t.Fatalf("reading vectors: %v", err)
	}
	var f vectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("decoding %s vectors: %v", message, err)
	}
	if f.Message != message || len(f.Cases) == 0 {
		t.Fatalf("%s.json: message %q with %d cases", message, f.Message, len(f.Cases))
	}
	return f
}

// TestVectorFilesCovered fails when a vector file appears that no test
// below reads, so a new kind of vector cannot be skipped silently.
func TestVectorFilesCovered(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(vectorsDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vector files in %s: %v", vectorsDir, err)
	}
	covered := []string{"task_request", "task_reply", "heartbeat", "cancel"}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		if !slices.Contains(covered, name) {
			t.Errorf("vector file %s is not covered by these tests", f)
		}
	}
}

func TestTaskRequestVectors(t *testing.T) {
	vf := loadVectors(t, "task_request")
	for _, c := range vf.Cases {
		t.Run(c.Name, func(t *testing.T) {
			var expect struct {
				Decision string `json:"decision"`
				Payload  struct {
					Kind        string          `json:"kind"`
					Value       json.RawMessage `json:"value"`
					Base64      string          `json:"base64"`
					ContentType string          `json:"content_type"`
				} `json:"payload"`
				Reply struct {
					Status             string `json:"status"`
					ErrorCode          string `json:"error_code"`
					ServiceErrorCode   int    `json:"service_error_code"`
					SupportedProtocols []int  `json:"supported_protocols"`
				} `json:"reply"`
			}
			mustUnmarshal(t, c.Expect, &expect)
			req, token, reject := decodeRequest(c.data())
			if c.SchemaValid != nil && *c.SchemaValid != (reject == nil) {
				t.Errorf("schema_valid is %v but the decision was %v", *c.SchemaValid, reject)
			}
			switch expect.Decision {
			case "handle":
				if reject != nil {
					t.Fatalf("rejected: %v", reject)
				}
				checkPayload(t, &req.task, expect.Payload.Kind, expect.Payload.Value, expect.Payload.Base64, expect.Payload.ContentType)
				checkTaskFields(t, c.Body, req)
			case "reject":
				if reject == nil {
					t.Fatalf("handled, want reject")
				}
				out := errorReply(token, reject)
				body := decodeReplyBody(t, out.body)
				if body.Status != expect.Reply.Status || body.Error.Code != expect.Reply.ErrorCode {
					t.Errorf("reply %s %s, want %s %s", body.Status, body.Error.Code, expect.Reply.Status, expect.Reply.ErrorCode)
				}
				if got, want := out.header.Get(micro.ErrorCodeHeader), itoa(expect.Reply.ServiceErrorCode); got != want {
					t.Errorf("%s: %q, want %q", micro.ErrorCodeHeader, got, want)
				}
				if !reflect.DeepEqual(body.SupportedProtocols, expect.Reply.SupportedProtocols) {
					t.Errorf("supported_protocols %v, want %v", body.SupportedProtocols, expect.Reply.SupportedProtocols)
				}
				validate(t, "task_reply", out.body)
			default:
				t.Fatalf("unknown decision %q", expect.Decision)
			}
		})
	}
}

// checkPayload compares a task's payload with a vector's interpretation.
func checkPayload(t *testing.T, task *Task, kind string, value json.RawMessage, b64, contentType string) {
	t.Helper()
	switch kind {
	case "json":
		if task.Binary {
			t.Fatalf("payload is bytes, want JSON")
		}
		if !jsonEqual(t, task.Payload, value) {
			t.Errorf("payload %s, want %s", task.Payload, value)
		}
	case "bytes":
		if !task.Binary {
			t.Fatalf("payload is JSON, want bytes")
		}
		if got := base64.StdEncoding.EncodeToString(task.Payload); got != b64 {
			t.Errorf("payload %q, want %q", got, b64)
		}
		if task.ContentType != contentType {
			t.Errorf("content type %q, want %q", task.ContentType, contentType)
		}
	default:
		t.Fatalf("unknown payload kind %q", kind)
	}
}

// checkTaskFields compares the Task with the request body it came from.
func checkTaskFields(t *testing.T, body json.RawMessage, req *taskRequest) {
	t.Helper()
	var b struct {
		TaskID              string  `json:"task_id"`
		TaskType            string  `json:"task_type"`
		Queue               string  `json:"queue"`
		Attempt             float64 `json:"attempt"` // 1.0 is the integer 1
		MaxAttempts         float64 `json:"max_attempts"`
		Created             string  `json:"created"`
		Deadline            *string `json:"deadline"`
		AttemptToken        string  `json:"attempt_token"`
		AttemptDeadline     string  `json:"attempt_deadline"`
		BudgetMs            float64 `json:"budget_ms"`
		HeartbeatSubject    string  `json:"heartbeat_subject"`
		HeartbeatIntervalMs float64 `json:"heartbeat_interval_ms"`
		HeartbeatAck        bool    `json:"heartbeat_ack"`
		CancelSubject       string  `json:"cancel_subject"`
		Traceparent         string  `json:"traceparent"`
	}
	mustUnmarshal(t, body, &b)
	task := req.task
	got := []any{task.ID, task.Type, task.Queue, task.Attempt, task.MaxAttempts,
		task.Created.UTC().Format(time.RFC3339Nano), task.AttemptDeadline.UTC().Format(time.RFC3339Nano),
		task.Budget, task.Traceparent, req.token, req.heartbeatSubject, req.heartbeatInterval, req.cancelSubject, req.heartbeatAck}
	want := []any{b.TaskID, b.TaskType, b.Queue, int(b.Attempt), int(b.MaxAttempts),
		mustTime(t, b.Created), mustTime(t, b.AttemptDeadline),
		time.Duration(b.BudgetMs) * time.Millisecond, b.Traceparent, b.AttemptToken, b.HeartbeatSubject,
		time.Duration(b.HeartbeatIntervalMs) * time.Millisecond, b.CancelSubject, b.HeartbeatAck}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("task fields\n got %v\nwant %v", got, want)
	}
	if (b.Deadline == nil) != task.Deadline.IsZero() ||
		(b.Deadline != nil && task.Deadline.UTC().Format(time.RFC3339Nano) != mustTime(t, *b.Deadline)) {
		t.Errorf("deadline %v, want %v", task.Deadline, b.Deadline)
	}
}

func TestTaskReplyVectors(t *testing.T) {
	vf := loadVectors(t, "task_reply")
	intents := 0
	for _, c := range vf.Cases {
		if c.Intent == nil {
			continue // the dispatcher's side: how it reads replies
		}
		intents++
		t.Run(c.Name, func(t *testing.T) {
			result, err := replyIntent(t, c.Intent)
			out := encodeReply(vf.AttemptToken, result, err)
			if !jsonEqual(t, out.body, c.Body) {
				t.Errorf("body\n got %s\nwant %s", out.body, c.Body)
			}
			if got := flatHeaders(out.header); !reflect.DeepEqual(got, c.Headers) {
				t.Errorf("headers %v, want %v", got, c.Headers)
			}
			validate(t, "task_reply", out.body)
		})
	}
	if intents == 0 {
		t.Fatal("no reply case has an intent")
	}
}

// replyIntent turns a vector's intent into what a handler returns.
func replyIntent(t *testing.T, raw json.RawMessage) (any, error) {
	t.Helper()
	var intent struct {
		OK      *json.RawMessage `json:"ok"`
		OKBytes *struct {
			Base64      string `json:"base64"`
			ContentType string `json:"content_type"`
		} `json:"ok_bytes"`
		Retry *struct {
			Code         string `json:"code"`
			Message      string `json:"message"`
			RetryAfterMs int64  `json:"retry_after_ms"`
		} `json:"retry"`
		Terminate *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"terminate"`
	}
	mustUnmarshal(t, raw, &intent)
	switch {
	case intent.OK != nil:
		var v any // a plain Go value, as a handler would return
		mustUnmarshal(t, *intent.OK, &v)
		return v, nil
	case bytes.Contains(raw, []byte(`"ok"`)):
		return nil, nil // {"ok": null}
	case intent.OKBytes != nil:
		data, err := base64.StdEncoding.DecodeString(intent.OKBytes.Base64)
		if err != nil {
			t.Fatal(err)
		}
		return Bytes{Data: data, ContentType: intent.OKBytes.ContentType}, nil
	case intent.Retry != nil:
		return nil, Retry(intent.Retry.Code, intent.Retry.Message, time.Duration(intent.Retry.RetryAfterMs)*time.Millisecond)
	case intent.Terminate != nil:
		return nil, Terminate(intent.Terminate.Code, intent.Terminate.Message)
	}
	t.Fatalf("unknown intent %s", raw)
	return nil, nil
}

func TestHeartbeatVectors(t *testing.T) {
	vf := loadVectors(t, "heartbeat")
	for _, c := range vf.Cases {
		t.Run(c.Name, func(t *testing.T) {
			var expect struct {
				Valid bool `json:"valid"`
			}
			mustUnmarshal(t, c.Expect, &expect)
			if c.Intent != nil {
				var intent struct {
					Progress *float64 `json:"progress"`
					Message  string   `json:"message"`
				}
				mustUnmarshal(t, c.Intent, &intent)
				var body struct {
					TaskID string `json:"task_id"`
				}
				mustUnmarshal(t, c.Body, &body)
				got, err := encodeHeartbeat(body.TaskID, vf.AttemptToken, intent.Progress, intent.Message)
				if err != nil {
					t.Fatal(err)
				}
				if !jsonEqual(t, got, c.Body) {
					t.Errorf("body\n got %s\nwant %s", got, c.Body)
				}
				validate(t, "heartbeat", got)
				return
			}
			// No intent: the library must never send what the dispatcher
			// would drop. Re-encode what the case carries and check the
			// library refuses it or sends a valid heartbeat instead.
			var body struct {
				TaskID   string   `json:"task_id"`
				Progress *float64 `json:"progress"`
				Message  string   `json:"message"`
			}
			if json.Unmarshal(c.data(), &body) != nil || body.TaskID == "" {
				return // garbage: nothing a library could be asked to send
			}
			got, err := encodeHeartbeat(body.TaskID, vf.AttemptToken, body.Progress, body.Message)
			if err != nil {
				if expect.Valid {
					t.Fatalf("valid heartbeat refused: %v", err)
				}
				return
			}
			validate(t, "heartbeat", got)
		})
	}
}

func TestCancelVectors(t *testing.T) {
	vf := loadVectors(t, "cancel")
	for _, c := range vf.Cases {
		t.Run(c.Name, func(t *testing.T) {
			var expect struct {
				Valid  bool   `json:"valid"`
				Reason string `json:"reason"`
			}
			mustUnmarshal(t, c.Expect, &expect)
			got, err := parseCancel(c.data(), vf.AttemptToken)
			if (err == nil) != expect.Valid {
				t.Fatalf("valid = %v (%v), want %v", err == nil, err, expect.Valid)
			}
			if err == nil && got.Reason != expect.Reason {
				t.Errorf("reason %q, want %q", got.Reason, expect.Reason)
			}
			if expect.Valid {
				// SPEC §7: a cancel for another attempt is ignored.
				if _, err := parseCancel(c.data(), "another_token_123"); err == nil {
					t.Errorf("cancel accepted for another attempt's token")
				}
			}
		})
	}
}
