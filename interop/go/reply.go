package jetbridge

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Bytes is a binary result: it is sent base64-encoded with its content
// type. A plain []byte result is sent the same way as
// application/octet-stream; a json.RawMessage result is sent as JSON.
type Bytes struct {
	Data []byte
	// ContentType defaults to application/octet-stream.
	ContentType string
}

// Limits of task_reply.schema.json's error object.
const (
	maxErrorCode    = 128
	maxErrorMessage = 8192
)

type replyBody struct {
	Type               string          `json:"type"`
	Protocol           int             `json:"protocol"`
	Status             string          `json:"status"`
	AttemptToken       string          `json:"attempt_token,omitempty"`
	ResultEncoding     string          `json:"result_encoding,omitempty"`
	ContentType        string          `json:"content_type,omitempty"`
	Result             json.RawMessage `json:"result,omitempty"`
	Error              *wireError      `json:"error,omitempty"`
	RetryAfterMs       *int64          `json:"retry_after_ms,omitempty"`
	SupportedProtocols []int           `json:"supported_protocols,omitempty"`
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details any    `json:"details,omitempty"`
}

// outgoing is a reply ready to publish: the body and the micro error
// headers, which the protocol fixes together (SPEC §4).
type outgoing struct {
	status string // ok, retry or terminate
	header nats.Header
	body   []byte
}

// failure is the micro error text of a failure reply ("code:description",
// as nats.go micro writes it in last_error), empty for an ok reply.
func (o outgoing) failure() string {
	if o.status == "ok" {
		return ""
	}
	return o.header.Get(micro.ErrorCodeHeader) + ":" + o.header.Get(micro.ErrorHeader)
}

// size is what the server counts against max_payload: the body plus the
// headers as nats.go encodes them.
func (o outgoing) size() int {
	n := len(o.body)
	if len(o.header) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range o.header {
			for _, v := range vs {
				n += len(k) + len(textproto.TrimString(v)) + len(": \r\n")
			}
		}
	}
	return n
}

// encodeReply turns what a handler returned into the reply for the attempt
// with the given token: an *Error found in err decides the failure, any
// other error is a retryable handler_error, and otherwise result is the
// success value.
func encodeReply(token string, result any, err error) outgoing {
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = Retry(CodeHandlerError, err.Error(), 0)
		}
		return errorReply(token, e)
	}
	body := replyBody{Type: typeTaskReply, Protocol: protocolVersion, Status: "ok", AttemptToken: token}
	if err := body.setResult(result); err != nil {
		return errorReply(token, Retry(CodeHandlerError, "result does not encode as JSON: "+err.Error(), 0))
	}
	data, err := marshal(body)
	if err != nil {
		return errorReply(token, Retry(CodeHandlerError, "result does not encode as JSON: "+err.Error(), 0))
	}
	return outgoing{status: body.Status, body: data}
}

// setResult encodes result: bytes as base64 with a content type, anything
// else as JSON.
func (b *replyBody) setResult(result any) error {
	var (
		data        []byte
		contentType string
		binary      = true
	)
	switch r := result.(type) {
	case Bytes:
		data, contentType = r.Data, r.ContentType
	case *Bytes:
		if r == nil {
			return b.setResult(nil)
		}
		data, contentType = r.Data, r.ContentType
	case json.RawMessage:
		binary = false
	case []byte:
		data = r
	default:
		binary = false
	}
	if !binary {
		enc, err := marshal(result)
		if err != nil {
			return err
		}
		b.ResultEncoding, b.Result = encodingJSON, enc
		return nil
	}
	if contentType == "" {
		contentType = octetStream
	}
	enc, err := marshal(base64.StdEncoding.EncodeToString(data))
	if err != nil {
		return err
	}
	b.ResultEncoding, b.ContentType, b.Result = encodingBase64, contentType, enc
	return nil
}

// errorReply encodes a retry or terminate reply with the micro error headers
// that make `nats micro stats` and stock micro clients see the failure:
// 400 for terminate, 500 for retry, 429 with Jetbridge-Retry-After-Ms for a
// retry with a delay, and 505 for unsupported_protocol.
func errorReply(token string, e *Error) outgoing {
	code := e.Code
	if code == "" {
		code = CodeHandlerError
	}
	code = truncate(code, maxErrorCode)
	message := truncate(e.Message, maxErrorMessage)
	body := replyBody{
		Type:         typeTaskReply,
		Protocol:     protocolVersion,
		Status:       "retry",
		AttemptToken: token,
		Error:        &wireError{Code: code, Message: message, Details: e.Details},
	}
	serviceCode := "500"
	header := nats.Header{}
	switch {
	case e.Terminal:
		body.Status, serviceCode = "terminate", "400"
	case code == CodeUnsupportedProtocol:
		serviceCode = "505"
		body.SupportedProtocols = supportedProtocols
	case e.RetryAfter > 0:
		ms := min(max(e.RetryAfter.Milliseconds(), 1), maxRetryAfterMs)
		body.RetryAfterMs = &ms
		serviceCode = "429"
		header.Set(headerRetryAfter, strconv.FormatInt(ms, 10))
	}
	headerText := message
	if headerText == "" {
		headerText = code
	}
	header.Set(micro.ErrorHeader, headerText)
	header.Set(micro.ErrorCodeHeader, serviceCode)
	data, err := marshal(body)
	if err != nil {
		// Only Details can fail to encode; the error is still worth sending.
		body.Error.Details = nil
		data, _ = marshal(body)
	}
	return outgoing{status: body.Status, header: header, body: data}
}

// fit replaces a reply that would exceed the server's max_payload with the
// terminate result_too_large that SPEC §8 asks for.
func fit(o outgoing, token string, maxPayload int64) outgoing {
	if maxPayload <= 0 || int64(o.size()) <= maxPayload {
		return o
	}
	return errorReply(token, Terminate(CodeResultTooLarge,
		fmt.Sprintf("reply of %d bytes exceeds the server's max_payload of %d bytes", o.size(), maxPayload)))
}
