package jetbridge

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func mustUnmarshal(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
}

// jsonEqual compares two JSON texts as values, as the vectors ask.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	mustUnmarshal(t, a, &va)
	mustUnmarshal(t, b, &vb)
	return reflect.DeepEqual(va, vb)
}

func mustTime(t *testing.T, s string) string {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts.UTC().Format(time.RFC3339Nano)
}

func itoa(n int) string { return strconv.Itoa(n) }

// flatHeaders turns headers into the vectors' form: one value per name.
func flatHeaders(h nats.Header) map[string]string {
	flat := map[string]string{}
	for k, vs := range h {
		flat[k] = vs[0]
	}
	return flat
}

type testReply struct {
	Type               string          `json:"type"`
	Status             string          `json:"status"`
	AttemptToken       string          `json:"attempt_token"`
	ResultEncoding     string          `json:"result_encoding"`
	ContentType        string          `json:"content_type"`
	Result             json.RawMessage `json:"result"`
	RetryAfterMs       *int64          `json:"retry_after_ms"`
	SupportedProtocols []int           `json:"supported_protocols"`
	Error              struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeReplyBody(t *testing.T, data []byte) testReply {
	t.Helper()
	var r testReply
	mustUnmarshal(t, data, &r)
	return r
}
