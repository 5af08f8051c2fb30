package jetbridge

import (
	"bytes"
	"encoding/json"
)

// Names fixed by the wire protocol (protocol/SPEC.md). They are unexported:
// handlers never need them, and keeping them here keeps every other file
// free of string literals that must match the spec.
const (
	protocolVersion = 1

	// protocolsAdvertised is the micro metadata value of metaProtocols: the
	// protocol versions this library speaks.
	protocolsAdvertised = "1,1.1"

	// maxRetryAfterMs is the largest retry_after_ms (7 days) the schema
	// allows; a longer delay is clamped to it.
	maxRetryAfterMs = 604800000

	typeTaskRequest = "io.jetbridge.v1.task_request"
	typeTaskReply   = "io.jetbridge.v1.task_reply"
	typeHeartbeat   = "io.jetbridge.v1.heartbeat"
	typeCancel      = "io.jetbridge.v1.cancel"

	encodingJSON   = "json"
	encodingBase64 = "base64"

	headerRetryAfter = "Jetbridge-Retry-After-Ms"

	// metaProtocols, metaSDK and metaTaskType are the micro metadata keys
	// the dispatcher and operators read (SPEC §2).
	metaProtocols = "jetbridge.protocols"
	metaSDK       = "jetbridge.sdk"
	metaTaskType  = "jetbridge.task_type"

	// queueGroup is the queue group every SDK uses, so replicas written in
	// different languages share one task type's load.
	queueGroup = "jetbridge"

	octetStream = "application/octet-stream"
)

// supportedProtocols is sent with unsupported_protocol replies so that a
// newer dispatcher can tell which versions this replica speaks.
var supportedProtocols = []int{protocolVersion}

// Error codes that this library puts in replies on its own.
const (
	CodeBadRequest          = "bad_request"
	CodeUnsupportedProtocol = "unsupported_protocol"
	CodeUnknownTaskType     = "unknown_task_type"
	CodeHandlerError        = "handler_error"
	CodeResultTooLarge      = "result_too_large"
	CodeCancelled           = "cancelled"
	CodeBadPayload          = "bad_payload"
)

// marshal encodes v as compact JSON without escaping <, > and &: results
// are data for a program, and the escapes only make them bigger.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
