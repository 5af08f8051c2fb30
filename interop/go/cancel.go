package jetbridge

import (
	"fmt"
	"regexp"
)

var cancelReasons = regexp.MustCompile(`^(operator|deadline|timeout|shutdown|lost)$`)

// parseCancel reads a cancel message meant for the attempt with the given
// token. Anything else (garbage, another version, another attempt's token)
// is an error: SPEC §7 says such messages are ignored.
func parseCancel(data []byte, token string) (*CancelError, error) {
	o, err := parseObject(data)
	if err != nil {
		return nil, err
	}
	if err := o.constant("type", typeCancel); err != nil {
		return nil, err
	}
	if v, ok := jsonInteger(o["protocol"]); !ok || v != protocolVersion {
		return nil, fmt.Errorf("protocol: must be %d", protocolVersion)
	}
	if _, err := o.name("task_id"); err != nil {
		return nil, err
	}
	got, err := o.token("attempt_token")
	if err != nil {
		return nil, err
	}
	reason, err := o.matching("reason", cancelReasons, 0)
	if err != nil {
		return nil, err
	}
	var message string
	if o.has("message") {
		if message, err = o.sized("message", 0, maxShortMessage); err != nil {
			return nil, err
		}
	}
	if got != token {
		return nil, fmt.Errorf("attempt_token: %q is not this attempt's", got)
	}
	return &CancelError{Reason: reason, Message: message}, nil
}
