package jetbridge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// baseRequest is the first task_request vector as a map to mutate.
func baseRequest(t *testing.T) map[string]any {
	t.Helper()
	var body map[string]any
	mustUnmarshal(t, loadVectors(t, "task_request").Cases[0].Body, &body)
	return body
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestRequestCheckMatchesSchema mutates a valid request member by member
// and checks that the library accepts exactly what task_request.schema.json
// accepts (with base64 content asserted), so the hand-written checks cannot
// drift from the schema unnoticed. The one place the library is stricter is
// a timestamp that matches the schema's pattern but names no real time
// (month 13): it cannot become a time.Time, and it is not RFC 3339.
func TestRequestCheckMatchesSchema(t *testing.T) {
	const notATime = "2026-13-24T10:00:00Z"
	values := []any{nil, "", "x", "a.b", "has space", 0, -1, 1, 2.5, 1.0, true,
		[]any{}, map[string]any{}, "2026-11-24T10:00:00Z", "2026-11-24T12:00:00.5+02:00",
		notATime, "2026-11-24 10:00:00Z", "json", "base64", "AAECAw==", "abc",
		"jetbridge.hb.x", "jetbridge.*", "a1B2c3D4e5F6g7H8", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	base := baseRequest(t)
	for member := range base {
		if member == "protocol" {
			continue // decided before the schema (SPEC §3.3 step 2)
		}
		for _, v := range append(values, "<missing>") {
			body := baseRequest(t)
			if v == "<missing>" {
				delete(body, member)
			} else {
				body[member] = v
			}
			data := mustMarshal(t, body)
			t.Run(fmt.Sprintf("%s=%v", member, v), func(t *testing.T) {
				schemaErr := schemaValid(t, "task_request", data)
				_, _, reject := decodeRequest(data)
				if v == notATime && strings.Contains("created deadline attempt_deadline", member) && schemaErr == nil {
					schemaErr = fmt.Errorf("not a time")
				}
				if (schemaErr == nil) != (reject == nil) {
					t.Errorf("schema says %v, library says %v", schemaErr, reject)
				}
			})
		}
	}
	t.Run("traceparent absent or bad", func(t *testing.T) {
		body := baseRequest(t)
		body["traceparent"] = "00-xyz"
		if _, _, reject := decodeRequest(mustMarshal(t, body)); reject == nil || reject.Code != CodeBadRequest {
			t.Errorf("bad traceparent: %v", reject)
		}
	})
}

func TestRequestProtocolDecision(t *testing.T) {
	for raw, supported := range map[string]bool{`1`: true, `1.0`: true, `2`: false, `"1"`: false, `null`: false, `0`: false} {
		body := baseRequest(t)
		var v any
		mustUnmarshal(t, []byte(raw), &v)
		body["protocol"] = v
		// Protocol is checked before the rest of the schema: a request in
		// another version may look different in every other way too.
		delete(body, "task_id")
		_, token, reject := decodeRequest(mustMarshal(t, body))
		wantCode := CodeUnsupportedProtocol
		if supported {
			wantCode = CodeBadRequest
		}
		if reject == nil || reject.Code != wantCode {
			t.Errorf("protocol %s: %v, want %s", raw, reject, wantCode)
		}
		if token != "a1B2c3D4e5F6g7H8" {
			t.Errorf("protocol %s: token %q not echoed", raw, token)
		}
	}
}

func TestRequestAcceptsAnyOffset(t *testing.T) {
	body := baseRequest(t)
	body["created"] = "2026-11-24T12:00:00.123456789+02:00"
	body["deadline"] = "2026-11-24T11:00:00-01:30"
	req, _, reject := decodeRequest(mustMarshal(t, body))
	if reject != nil {
		t.Fatal(reject)
	}
	if got := req.task.Created.UTC().Format("15:04:05.000"); got != "10:00:00.123" {
		t.Errorf("created %s", got)
	}
	if got := req.task.Deadline.UTC().Format("15:04"); got != "12:30" {
		t.Errorf("deadline %s", got)
	}
}

func TestRequestBadBase64Length(t *testing.T) {
	body := baseRequest(t)
	body["payload_encoding"], body["payload"] = "base64", "abc" // matches the pattern, is not padded base64
	if _, _, reject := decodeRequest(mustMarshal(t, body)); reject == nil || reject.Code != CodeBadRequest {
		t.Errorf("got %v, want bad_request", reject)
	}
}
