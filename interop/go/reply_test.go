package jetbridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
)

const token = "a1B2c3D4e5F6g7H8"

func TestReplyResults(t *testing.T) {
	for name, tc := range map[string]struct {
		result         any
		encoding, ct   string
		result64, json string
	}{
		"struct":       {result: struct{ A int }{1}, encoding: "json", json: `{"A":1}`},
		"raw json":     {result: json.RawMessage(`[1, 2]`), encoding: "json", json: `[1,2]`},
		"html kept":    {result: "<a&b>", encoding: "json", json: `"<a&b>"`},
		"[]byte":       {result: []byte("hi"), encoding: "base64", ct: "application/octet-stream", result64: "aGk="},
		"Bytes":        {result: Bytes{Data: []byte{0}, ContentType: "image/png"}, encoding: "base64", ct: "image/png", result64: "AA=="},
		"*Bytes":       {result: &Bytes{Data: []byte{}}, encoding: "base64", ct: "application/octet-stream", result64: ""},
		"nil is null":  {result: nil, encoding: "json", json: `null`},
		"nil *Bytes":   {result: (*Bytes)(nil), encoding: "json", json: `null`},
		"Bytes no ct":  {result: Bytes{Data: []byte("a")}, encoding: "base64", ct: "application/octet-stream", result64: "YQ=="},
		"number float": {result: 2.5, encoding: "json", json: `2.5`},
	} {
		t.Run(name, func(t *testing.T) {
			out := encodeReply(token, tc.result, nil)
			validate(t, "task_reply", out.body)
			if out.header != nil || out.status != "ok" {
				t.Errorf("status %s headers %v", out.status, out.header)
			}
			r := decodeReplyBody(t, out.body)
			if r.ResultEncoding != tc.encoding || r.ContentType != tc.ct || r.AttemptToken != token {
				t.Errorf("got %s", out.body)
			}
			if tc.encoding == "json" && string(r.Result) != tc.json {
				t.Errorf("result %s, want %s", r.Result, tc.json)
			}
			if tc.encoding == "base64" && string(r.Result) != `"`+tc.result64+`"` {
				t.Errorf("result %s, want %q", r.Result, tc.result64)
			}
		})
	}
}

func TestReplyErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		err                error
		status, code, http string
	}{
		"plain error":                  {errors.New("disk full"), "retry", CodeHandlerError, "500"},
		"wrapped retry":                {fmt.Errorf("sending: %w", Retry("smtp_busy", "busy", 0)), "retry", "smtp_busy", "500"},
		"wrapped term":                 {fmt.Errorf("x: %w", Terminate("bad_address", "no such mailbox")), "terminate", "bad_address", "400"},
		"retry after":                  {Retry("slow", "later", 1500*time.Millisecond), "retry", "slow", "429"},
		"sub-ms rounds":                {Retry("slow", "later", time.Microsecond), "retry", "slow", "429"},
		"empty code":                   {Retry("", "", 0), "retry", CodeHandlerError, "500"},
		"panic":                        {&panicError{value: "boom"}, "retry", CodeHandlerError, "500"},
		"terminal ignores retry after": {&Error{Code: "x", Message: "y", Terminal: true, RetryAfter: time.Second}, "terminate", "x", "400"},
		"details":                      {&Error{Code: "x", Message: "y", Details: map[string]int{"line": 3}}, "retry", "x", "500"},
		"bad details":                  {&Error{Code: "x", Message: "y", Details: math.Inf(1)}, "retry", "x", "500"},
		"long":                         {Retry(strings.Repeat("c", 200), strings.Repeat("m", 9000), 0), "retry", strings.Repeat("c", 128), "500"},
		"multi-line text":              {errors.New("line 1\nline 2"), "retry", CodeHandlerError, "500"},
	} {
		t.Run(name, func(t *testing.T) {
			out := encodeReply(token, "ignored", tc.err)
			validate(t, "task_reply", out.body)
			r := decodeReplyBody(t, out.body)
			if r.Status != tc.status || r.Error.Code != tc.code || out.status != tc.status {
				t.Errorf("got %s", out.body)
			}
			if got := out.header.Get(micro.ErrorCodeHeader); got != tc.http {
				t.Errorf("service error code %s, want %s", got, tc.http)
			}
			if out.header.Get(micro.ErrorHeader) == "" {
				t.Errorf("no %s header", micro.ErrorHeader)
			}
			if (r.RetryAfterMs != nil) != (tc.http == "429") || (tc.http == "429" && out.header.Get(headerRetryAfter) != fmt.Sprint(*r.RetryAfterMs)) {
				t.Errorf("retry_after_ms %v, header %q", r.RetryAfterMs, out.header.Get(headerRetryAfter))
			}
		})
	}
}

func TestReplyUnencodableResult(t *testing.T) {
	out := encodeReply(token, make(chan int), nil)
	validate(t, "task_reply", out.body)
	if r := decodeReplyBody(t, out.body); r.Status != "retry" || r.Error.Code != CodeHandlerError {
		t.Errorf("got %s", out.body)
	}
}

func TestFitResultTooLarge(t *testing.T) {
	out := encodeReply(token, Bytes{Data: make([]byte, 3000)}, nil)
	if got := fit(out, token, int64(out.size())); got.status != "ok" {
		t.Errorf("a reply of exactly max_payload was replaced: %s", got.body)
	}
	got := fit(out, token, int64(out.size()-1))
	validate(t, "task_reply", got.body)
	r := decodeReplyBody(t, got.body)
	if r.Status != "terminate" || r.Error.Code != CodeResultTooLarge || r.AttemptToken != token {
		t.Errorf("got %s", got.body)
	}
	if got.header.Get(micro.ErrorCodeHeader) != "400" {
		t.Errorf("headers %v", got.header)
	}
}

func TestHeartbeatEncoding(t *testing.T) {
	for _, p := range []float64{-0.01, 1.01, math.NaN()} {
		if _, err := encodeHeartbeat("t1", token, &p, ""); err == nil {
			t.Errorf("progress %v accepted", p)
		}
	}
	long := strings.Repeat("é", 2000)
	data, err := encodeHeartbeat("t1", token, new(0.0), long)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, "heartbeat", data)
	if !strings.Contains(string(data), `"progress":0`) {
		t.Errorf("progress 0 dropped: %s", data)
	}
}

func TestTaskDecode(t *testing.T) {
	var in struct{ To string }
	task := &Task{Payload: []byte(`{"to":"ada@example.com"}`)}
	if err := task.Decode(&in); err != nil || in.To != "ada@example.com" {
		t.Fatalf("decode: %v %+v", err, in)
	}
	var e *Error
	if err := (&Task{Payload: []byte(`[1]`)}).Decode(&in); !errors.As(err, &e) || !e.Terminal || e.Code != CodeBadPayload {
		t.Errorf("mismatched JSON: %v", err)
	}
	if err := (&Task{Payload: []byte{1}, Binary: true, ContentType: "image/png"}).Decode(&in); !errors.As(err, &e) || e.Code != CodeBadPayload {
		t.Errorf("bytes: %v", err)
	}
	if err := (&Task{}).Heartbeat(t.Context(), new(0.5), "hand-made tasks do not send"); err != nil {
		t.Errorf("heartbeat on a hand-made task: %v", err)
	}
}

// retry_after_ms has a maximum of 7 days (protocol 1.1 rule 6): a longer
// delay is clamped, in the body and the header alike.
func TestRetryAfterClamped(t *testing.T) {
	out := errorReply(token, Retry("later", "much later", 30*24*time.Hour))
	validate(t, "task_reply", out.body)
	r := decodeReplyBody(t, out.body)
	if r.RetryAfterMs == nil || *r.RetryAfterMs != 604800000 || out.header.Get(headerRetryAfter) != "604800000" {
		t.Errorf("reply %s %v", out.body, out.header)
	}
}
