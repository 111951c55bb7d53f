// Package cloudevents reads CloudEvents 1.0 from NATS messages as the
// CloudEvents NATS protocol binding defines them, in both content modes:
//
//   - structured: the body is the JSON event format, an envelope holding the
//     attributes and the data (inline as "data", or base64 as
//     "data_base64");
//   - binary: the attributes are "ce-" headers (names matched without regard
//     to case, values percent-encoded, and possibly quoted), the data is the
//     body, and its media type is ce-datacontenttype or Content-Type.
//
// A message is structured when its Content-Type is application/cloudevents
// (with any suffix or parameters, matched without regard to case), binary
// when it has any ce- header, and structured when it has neither: what a
// producer sends that sets no headers, or predates them (the binding's rule
// for servers before 2.2), or sets only a Content-Type of application/json
// (as some wrap their events). A binary-mode event without a single ce-
// header could never be valid, so this only accepts events the binding's
// strict reading would refuse.
//
// Read refuses what the specification does not allow (a missing or empty
// id, source, specversion or type; a specversion other than 1.0; an
// attribute of the wrong type or with an invalid name; data and data_base64
// both; bad percent-encoding or base64), with an error that wraps
// ErrInvalid and names the attribute.
//
// The CloudEvents Go SDK was measured and not used: it adds about 1.3 MB to
// a stripped binary and json-iterator and reflect2 (which reaches into the
// runtime through go:linkname) to the module graph, its NATS binding is for
// core NATS subscriptions rather than JetStream messages, and what it would
// do here is this file's envelope parsing.
package cloudevents

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/internal/jsonvalue"
)

// ErrInvalid is wrapped by every error of a message that is not a valid
// CloudEvent.
var ErrInvalid = errors.New("invalid CloudEvent")

// SpecVersion is the CloudEvents version this package reads.
const SpecVersion = "1.0"

// Mode is a CloudEvents content mode.
type Mode string

// Content modes.
const (
	Structured Mode = "structured"
	Binary     Mode = "binary"
)

// Attribute names of the specification.
const (
	AttrID              = "id"
	AttrSource          = "source"
	AttrSpecVersion     = "specversion"
	AttrType            = "type"
	AttrDataContentType = "datacontenttype"
	AttrDataSchema      = "dataschema"
	AttrSubject         = "subject"
	AttrTime            = "time"
)

// required are the attributes every event has, in the order they are
// reported missing.
var required = []string{AttrID, AttrSource, AttrSpecVersion, AttrType}

// stringTyped are the attributes of the specification whose value is a
// string (time and dataschema included: they are checked further).
var stringTyped = map[string]bool{
	AttrID: true, AttrSource: true, AttrSpecVersion: true, AttrType: true,
	AttrDataContentType: true, AttrDataSchema: true, AttrSubject: true, AttrTime: true,
}

// Event is a CloudEvent read from a message.
type Event struct {
	// Mode is the content mode it came in.
	Mode Mode
	// Attributes holds every context attribute present, by name: the
	// specification's as strings, extensions as strings, int64 or bool
	// (binary mode carries them all as strings).
	Attributes map[string]any

	data     []byte // the data's bytes: JSON text when dataJSON
	dataJSON bool
	value    any // the data as a value, when parsed
	parsed   bool
}

// ID, Source and Type return the required attributes.
func (e *Event) ID() string     { return e.attr(AttrID) }
func (e *Event) Source() string { return e.attr(AttrSource) }
func (e *Event) Type() string   { return e.attr(AttrType) }

func (e *Event) attr(name string) string {
	s, _ := e.Attributes[name].(string)
	return s
}

// HasData reports whether the event carries data.
func (e *Event) HasData() bool { return e.data != nil }

// Value returns the data as a value: for JSON data (a datacontenttype that
// is JSON, or none), the parsed JSON (see jsonvalue); else a string when the
// bytes are valid UTF-8 and []byte when they are not; nil without data.
func (e *Event) Value() (any, error) {
	if e.parsed || e.data == nil {
		return e.value, nil
	}
	if !e.dataJSON {
		if utf8.Valid(e.data) {
			e.value = string(e.data)
		} else {
			e.value = e.data
		}
		e.parsed = true
		return e.value, nil
	}
	v, err := jsonvalue.Parse(e.data)
	if err != nil {
		return nil, fmt.Errorf("%w: data: %w", ErrInvalid, err)
	}
	e.value, e.parsed = v, true
	return v, nil
}

// Text returns the data as text, the input of a route that maps none: a
// JSON string's content, other JSON as compact JSON text, other data as
// its bytes (which must be valid UTF-8). It is "" without data.
func (e *Event) Text() (string, error) {
	if e.data == nil {
		return "", nil
	}
	if !e.dataJSON {
		if !utf8.Valid(e.data) {
			return "", fmt.Errorf("%w: data is not valid UTF-8 text (datacontenttype %q)", ErrInvalid, e.attr(AttrDataContentType))
		}
		return string(e.data), nil
	}
	v, err := e.Value()
	if err != nil {
		return "", err
	}
	if s, ok := v.(string); ok {
		return s, nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, e.data); err != nil {
		return "", fmt.Errorf("%w: data: %w", ErrInvalid, err)
	}
	return b.String(), nil
}

// IsStructured reports whether a message with header h is in structured
// mode (see the package comment).
func IsStructured(h nats.Header) bool {
	if ct, ok := header(h, "Content-Type"); ok && isCloudEventsType(ct) {
		return true
	}
	for k := range h {
		if hasCEPrefix(k) {
			return false
		}
	}
	return true
}

func isCloudEventsType(ct string) bool {
	ct = strings.ToLower(strings.TrimSpace(ct))
	return strings.HasPrefix(ct, "application/cloudevents")
}

// isJSONFormat reports whether a structured-mode Content-Type (or none)
// names the JSON event format of a single event: application/cloudevents
// with no suffix or "+json".
func isJSONFormat(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/cloudevents" || mt == "application/cloudevents+json")
}

func hasCEPrefix(name string) bool {
	return len(name) > 3 && strings.EqualFold(name[:3], "ce-")
}

// Read reads the CloudEvent of a message with body and header h.
func Read(body []byte, h nats.Header) (*Event, error) {
	if IsStructured(h) {
		ct, _ := header(h, "Content-Type")
		if isCloudEventsType(ct) && !isJSONFormat(ct) {
			return nil, fmt.Errorf("%w: structured mode with Content-Type %s: only single events in the JSON event format are supported", ErrInvalid, quoteShort(ct))
		}
		e, err := readStructured(body)
		if err != nil && !isCloudEventsType(ct) {
			// Say why it was read so: the producer may have meant
			// binary mode and sent no ce- header.
			err = fmt.Errorf("%w (read as structured mode: no ce- header)", err)
		}
		return e, err
	}
	return readBinary(body, h)
}

func readStructured(body []byte) (*Event, error) {
	members, err := jsonvalue.ParseObject(body)
	if err != nil {
		return nil, fmt.Errorf("%w: structured mode: the body is not a JSON event: %w", ErrInvalid, err)
	}
	e := &Event{Mode: Structured, Attributes: make(map[string]any, len(members))}
	var data, data64 *jsonvalue.Member
	for i := range members {
		m := &members[i]
		switch m.Key {
		case "data":
			data = m
			continue
		case "data_base64":
			data64 = m
			continue
		}
		if err := checkName(m.Key); err != nil {
			return nil, err
		}
		switch v := m.Value.(type) {
		case nil:
			// The JSON format: a null attribute is an absent one.
			continue
		case string:
		case bool:
			if stringTyped[m.Key] {
				return nil, typeError(m.Key, "a string", "a boolean")
			}
		case int64:
			if stringTyped[m.Key] {
				return nil, typeError(m.Key, "a string", "a number")
			}
			if v < -1<<31 || v >= 1<<31 {
				return nil, fmt.Errorf("%w: the attribute %s is outside the range of a CloudEvents Integer (32 bits)", ErrInvalid, quoteShort(m.Key))
			}
		case float64:
			return nil, typeError(m.Key, "a string, an integer or a boolean", "a number with a fraction")
		default:
			return nil, typeError(m.Key, "a string, an integer or a boolean", "an object or array")
		}
		e.Attributes[m.Key] = m.Value
	}
	if err := e.check("structured"); err != nil {
		return nil, err
	}
	jsonData := isJSONType(e.attr(AttrDataContentType))
	switch {
	case data != nil && data64 != nil:
		return nil, fmt.Errorf("%w: both data and data_base64 are set", ErrInvalid)
	case data64 != nil:
		if data64.Value == nil {
			break
		}
		s, ok := data64.Value.(string)
		if !ok {
			return nil, typeError("data_base64", "a base64 string", "another JSON value")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: data_base64 is not valid base64: %v", ErrInvalid, err)
		}
		e.data, e.dataJSON = b, jsonData
	case data != nil:
		if data.Value == nil {
			break
		}
		if s, ok := data.Value.(string); ok && !jsonData {
			// Data that is not JSON travels as a JSON string.
			e.data = []byte(s)
			break
		}
		e.data, e.dataJSON = data.Raw, true
		e.value, e.parsed = data.Value, true
	}
	return e, nil
}

func readBinary(body []byte, h nats.Header) (*Event, error) {
	e := &Event{Mode: Binary, Attributes: make(map[string]any, 8)}
	from := make(map[string]string, 8) // attribute -> the header it came from
	names := make([]string, 0, 8)
	for k, vv := range h {
		if hasCEPrefix(k) && len(vv) > 0 {
			names = append(names, k)
		}
	}
	// In order, so that the error of a message is the same on every
	// delivery.
	slices.Sort(names)
	for _, k := range names {
		vv := h[k]
		name := strings.ToLower(k[3:])
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("%w (from the header %s)", err, quoteShort(k))
		}
		for _, raw := range vv {
			v, err := decodeHeaderValue(raw)
			if err != nil {
				return nil, fmt.Errorf("%w: the header %s: %v", ErrInvalid, quoteShort(k), err)
			}
			if prev, ok := e.Attributes[name]; ok && prev != v {
				return nil, fmt.Errorf("%w: the attribute %s has two different values (headers %s and %s)", ErrInvalid, quoteShort(name), quoteShort(from[name]), quoteShort(k))
			}
			e.Attributes[name], from[name] = v, k
		}
	}
	if _, ok := e.Attributes[AttrDataContentType]; !ok {
		if ct, _ := header(h, "Content-Type"); ct != "" {
			e.Attributes[AttrDataContentType] = ct
		}
	}
	if err := e.check("binary"); err != nil {
		return nil, err
	}
	if len(body) > 0 {
		e.data, e.dataJSON = body, isJSONType(e.attr(AttrDataContentType))
	}
	return e, nil
}

// check applies the rules every event follows, whatever its mode.
func (e *Event) check(mode string) error {
	for _, name := range required {
		if e.attr(name) == "" {
			where := ""
			if mode == "binary" {
				where = fmt.Sprintf(" (binary mode: no ce-%s header)", name)
			}
			if _, ok := e.Attributes[name]; ok {
				return fmt.Errorf("%w: the required attribute %q is empty", ErrInvalid, name)
			}
			return fmt.Errorf("%w: the required attribute %q is missing%s", ErrInvalid, name, where)
		}
	}
	if v := e.attr(AttrSpecVersion); v != SpecVersion {
		return fmt.Errorf("%w: specversion %s is not supported (only %s)", ErrInvalid, quoteShort(v), SpecVersion)
	}
	if t, ok := e.Attributes[AttrTime].(string); ok {
		if _, err := time.Parse(time.RFC3339Nano, t); err != nil {
			return fmt.Errorf("%w: the attribute \"time\" is not an RFC 3339 timestamp: %s", ErrInvalid, quoteShort(t))
		}
	}
	if ct, ok := e.Attributes[AttrDataContentType].(string); ok {
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			return fmt.Errorf("%w: the attribute \"datacontenttype\" is not a media type: %s", ErrInvalid, quoteShort(ct))
		}
	}
	return nil
}

// checkName applies the specification's rule for attribute names: lower-case
// ASCII letters and digits.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: an attribute has an empty name", ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return fmt.Errorf("%w: %s is not a valid attribute name (lower-case letters and digits only)", ErrInvalid, quoteShort(name))
		}
	}
	return nil
}

func typeError(name, want, got string) error {
	return fmt.Errorf("%w: the attribute %s must be %s, not %s", ErrInvalid, quoteShort(name), want, got)
}

// isJSONType reports whether data of media type ct is JSON: no type at all
// (the JSON format's default), application/json, text/json, or any
// structured "+json" suffix.
func isJSONType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// decodeHeaderValue decodes a binary-mode header value: a quoted string's
// escapes first (RFC 7230 3.2.6), then one round of percent-decoding, whose
// result must be valid UTF-8.
func decodeHeaderValue(v string) (string, error) {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		var b strings.Builder
		for i := 1; i < len(v)-1; i++ {
			if v[i] == '\\' && i+1 < len(v)-1 {
				i++
			}
			b.WriteByte(v[i])
		}
		v = b.String()
	}
	if strings.IndexByte(v, '%') < 0 {
		if !utf8.ValidString(v) {
			return "", errors.New("not valid UTF-8")
		}
		return v, nil
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			out = append(out, v[i])
			continue
		}
		if i+2 >= len(v) || unhex(v[i+1]) < 0 || unhex(v[i+2]) < 0 {
			return "", fmt.Errorf("bad percent-encoding at byte %d", i)
		}
		out = append(out, byte(unhex(v[i+1])<<4|unhex(v[i+2])))
		i += 2
	}
	if !utf8.Valid(out) {
		return "", errors.New("its percent-encoded bytes are not valid UTF-8")
	}
	return string(out), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// header returns the first value of the header name, matched without
// regard to case, preferring the exact name.
func header(h nats.Header, name string) (string, bool) {
	if vv, ok := h[name]; ok && len(vv) > 0 {
		return vv[0], true
	}
	for k, vv := range h {
		if len(vv) > 0 && strings.EqualFold(k, name) {
			return vv[0], true
		}
	}
	return "", false
}

// quoteShort quotes at most the first 40 bytes of s in ASCII: attribute
// names and values come from producers, errors go into logs and headers.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%+q...", s[:max])
	}
	return fmt.Sprintf("%+q", s)
}
