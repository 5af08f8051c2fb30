package jetbridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"
)

// The patterns of protocol/schemas/common.schema.json. ECMAScript's \s, which
// the subject pattern uses, is wider than Go's, so it is spelled out.
var (
	namePattern      = regexp.MustCompile(`^[a-zA-Z0-9_:-]+$`)
	tokenPattern     = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)
	timestampPattern = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$`)
	subjectToken     = `[^\t\n\v\f\r \x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}\x{feff}*>.]+`
	subjectPattern   = regexp.MustCompile(`^` + subjectToken + `(\.` + subjectToken + `)*$`)
	base64Pattern    = regexp.MustCompile(`^[A-Za-z0-9+/]*={0,2}$`)
	traceparentRE    = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)
)

// object is a JSON object whose members are checked one at a time against
// a schema, so that a rejection can name the member at fault.
type object map[string]json.RawMessage

// parseObject accepts exactly a JSON object: json.Unmarshal alone would
// also take null as an empty map.
func parseObject(data []byte) (object, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("body is not a JSON object")
	}
	var o object
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, fmt.Errorf("body is not a JSON object: %v", err)
	}
	return o, nil
}

// isNull reports whether a member is JSON null.
func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

func (o object) has(name string) bool {
	_, ok := o[name]
	return ok
}

// str returns a required string member. A JSON null is not a string, though
// json.Unmarshal would let it through as "".
func (o object) str(name string) (string, error) {
	raw, ok := o[name]
	if !ok {
		return "", fmt.Errorf("%s: missing", name)
	}
	raw = bytes.TrimSpace(raw)
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("%s: not a string", name)
	}
	return s, nil
}

// constant checks a required string member against its one allowed value.
func (o object) constant(name, want string) error {
	s, err := o.str(name)
	if err != nil {
		return err
	}
	if s != want {
		return fmt.Errorf("%s: must be %q, not %q", name, want, s)
	}
	return nil
}

// matching returns a required string member that must match re and have at
// most maxLen characters (0: no limit).
func (o object) matching(name string, re *regexp.Regexp, maxLen int) (string, error) {
	s, err := o.str(name)
	if err != nil {
		return "", err
	}
	if maxLen > 0 && utf8.RuneCountInString(s) > maxLen {
		return "", fmt.Errorf("%s: longer than %d characters", name, maxLen)
	}
	if !re.MatchString(s) {
		return "", fmt.Errorf("%s: %q does not match %s", name, s, re)
	}
	return s, nil
}

// sized returns a required string member with minLen to maxLen characters.
func (o object) sized(name string, minLen, maxLen int) (string, error) {
	s, err := o.str(name)
	if err != nil {
		return "", err
	}
	if n := utf8.RuneCountInString(s); n < minLen || n > maxLen {
		return "", fmt.Errorf("%s: must have %d to %d characters", name, minLen, maxLen)
	}
	return s, nil
}

func (o object) name(name string) (string, error)  { return o.matching(name, namePattern, 256) }
func (o object) token(name string) (string, error) { return o.matching(name, tokenPattern, 0) }

func (o object) subject(name string) (string, error) {
	s, err := o.str(name)
	if err != nil {
		return "", err
	}
	if s == "" || !subjectPattern.MatchString(s) {
		return "", fmt.Errorf("%s: %q is not a NATS subject without wildcards", name, s)
	}
	return s, nil
}

// timestamp returns a required RFC 3339 member. The pattern is the schema's;
// parsing also refuses dates that do not exist.
func (o object) timestamp(name string) (time.Time, error) {
	s, err := o.str(name)
	if err != nil {
		return time.Time{}, err
	}
	if !timestampPattern.MatchString(s) {
		return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 timestamp", name, s)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 timestamp", name, s)
	}
	return t, nil
}

// integer returns a required integer member that is at least min. As in
// JSON Schema, 2.0 is an integer and "2" is not.
func (o object) integer(name string, min int64) (int64, error) {
	raw, ok := o[name]
	if !ok {
		return 0, fmt.Errorf("%s: missing", name)
	}
	n, ok := jsonInteger(raw)
	if !ok {
		return 0, fmt.Errorf("%s: not an integer", name)
	}
	if n < min {
		return 0, fmt.Errorf("%s: must be at least %d", name, min)
	}
	return n, nil
}

// jsonInteger reads a JSON number with no fractional part.
func jsonInteger(raw json.RawMessage) (int64, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return 0, false
	}
	num, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	if n, err := strconv.ParseInt(num.String(), 10, 64); err == nil {
		return n, true
	}
	f, err := num.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) > math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

// number returns an optional number member; ok is false when it is absent.
func (o object) number(name string) (f float64, ok bool, err error) {
	raw, present := o[name]
	if !present {
		return 0, false, nil
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || !(raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) || json.Unmarshal(raw, &f) != nil {
		return 0, false, fmt.Errorf("%s: not a number", name)
	}
	return f, true, nil
}

// decodeBase64 reads standard base64 with padding, as the protocol carries
// bytes; the pattern check first refuses the line breaks the decoder skips.
func decodeBase64(s string) ([]byte, error) {
	if !base64Pattern.MatchString(s) {
		return nil, fmt.Errorf("not base64")
	}
	// Strict: canonical encodings only, whose unused bits before the
	// padding are zero (SPEC 1.1).
	return base64.StdEncoding.Strict().DecodeString(s)
}
