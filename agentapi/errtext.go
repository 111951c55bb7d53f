package agentapi

import (
	"bytes"
	"encoding/json"
	"strings"
)

// summarize keeps of an error body what an operator needs: when the body is
// a JSON error, its message (and type and code, when given); otherwise the
// start of the body. Either way the token is scrubbed from it in every form
// the scrubber knows and the result is sanitised and bounded: the body is
// the server's text, and it goes to logs, dead-letter headers and
// terminals. The excerpt (MaxErrorText) is far shorter than what is read
// (MaxErrorBody), and the whole read is scrubbed before it is cut: a token
// at the read's end is never shown, and one at the excerpt's end is
// recognised whole.
func summarize(body []byte, sc *scrubber) string {
	if s, ok := jsonError(body, sc); ok {
		return s
	}
	return sanitize(sc.scrub(string(body)), MaxErrorText)
}

// Bounds on the parts of a JSON error kept.
const (
	maxErrorMessage = 240
	maxErrorCode    = 40
)

// jsonError reads the common shapes of a JSON error body:
//
//	{"error": {"message": "...", "type": "...", "code": "..." or 123}}
//	{"error": "..."}
//	{"message": "..."}
//
// and renders them as `message (type: t, code: c)`. It reports false for
// anything else, a body that is not (or not wholly) JSON included.
func jsonError(body []byte, sc *scrubber) (string, bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return "", false
	}
	var top struct {
		Error   json.RawMessage `json:"error"`
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(body, &top) != nil {
		return "", false
	}
	var msg, typ, code string
	var detail struct {
		Message json.RawMessage `json:"message"`
		Type    json.RawMessage `json:"type"`
		Code    json.RawMessage `json:"code"`
	}
	switch {
	case jsonText(top.Error) != "":
		msg = jsonText(top.Error)
	case json.Unmarshal(top.Error, &detail) == nil:
		msg, typ, code = jsonText(detail.Message), jsonText(detail.Type), jsonText(detail.Code)
	}
	if msg == "" && typ == "" && code == "" {
		msg = jsonText(top.Message)
	}
	if msg == "" && typ == "" && code == "" {
		return "", false
	}
	part := func(s string, max int) string { return sanitize(sc.scrub(s), max) }
	var sb strings.Builder
	sb.WriteString(part(msg, maxErrorMessage))
	var extra []string
	if typ != "" {
		extra = append(extra, "type: "+part(typ, maxErrorCode))
	}
	if code != "" {
		extra = append(extra, "code: "+part(code, maxErrorCode))
	}
	if len(extra) > 0 {
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("(" + strings.Join(extra, ", ") + ")")
	}
	return sb.String(), true
}

// jsonText returns a JSON string's value or a number's literal, and "" for
// anything else (null, objects, arrays, booleans, nothing).
func jsonText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case c == '-' || c >= '0' && c <= '9':
		return string(raw)
	}
	return ""
}

// safeError wraps a transport error so that its text, which may quote what
// the server sent (net/http quotes a malformed status line or header line in
// its errors), passes the same scrubber and sanitiser as an answer's text.
// The error itself stays reachable for errors.Is and errors.As.
func safeError(err error, tok Secret) error {
	if err == nil {
		return nil
	}
	return &textError{msg: sanitize(newScrubber(tok).scrub(err.Error()), MaxErrorText), err: err}
}

type textError struct {
	msg string
	err error
}

func (e *textError) Error() string { return e.msg }
func (e *textError) Unwrap() error { return e.err }
