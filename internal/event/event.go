// Package event is the producer-facing message contract: how a NATS
// message is read as a trigger event (Contract.Decode), which
// Idempotency-Key it is sent with (IdempotencyKey), and why a message that
// breaks the contract is refused (a deadletter.Reason).
package event

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/mapping"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// BodyFormat says how a route reads a message body.
type BodyFormat string

// Body formats.
const (
	// BodyJSON: the body is the API's request JSON,
	// {"input": "...", "conversation_key": "..."}.
	BodyJSON BodyFormat = "json"
	// BodyText: the whole body is the input; the conversation key, if any,
	// comes from a header.
	BodyText BodyFormat = "text"
	// BodyCloudEvents: the message is a CloudEvent in either content mode
	// of the NATS protocol binding (see internal/cloudevents); the input is
	// its data as text unless the route maps one.
	BodyCloudEvents BodyFormat = "cloudevents"
)

// Message headers producers may set.
const (
	// HeaderIdempotencyKey overrides the message id as the Idempotency-Key.
	// Dead-letter replay sets it so that a replayed event keeps its key
	// (the dead-letter format carries it, so it is declared there).
	HeaderIdempotencyKey = deadletter.HeaderIdempotencyKey
	// HeaderConversationKey is the default header a text route reads the
	// conversation key from.
	HeaderConversationKey = "Conversation-Key"
)

// DefaultMaxInputBytes is the default limit on an event's input.
const DefaultMaxInputBytes = 256 << 10

// Contract is the producer-facing message contract of a route. The zero
// value is the JSON contract with default limits.
type Contract struct {
	// Format of the body. Default BodyJSON.
	Format BodyFormat
	// ConversationKeyHeader names the header a BodyText route takes the
	// conversation key from. Default HeaderConversationKey.
	ConversationKeyHeader string
	// MaxInputBytes limits the input. Default DefaultMaxInputBytes.
	MaxInputBytes int
	// Mapping, when not nil, maps the event to the call: each field it
	// sets replaces what the body gives for it (see Read). nil maps
	// nothing.
	Mapping *mapping.Mapping
	// AllowedTriggerIDs are the trigger ids a mapped trigger id may be.
	// An event whose mapped id matches none is refused
	// (deadletter.ReasonTriggerNotAllowed); the zero value allows none.
	AllowedTriggerIDs triggerglob.Patterns
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Contract) WithDefaults() Contract {
	if c.Format == "" {
		c.Format = BodyJSON
	}
	if c.ConversationKeyHeader == "" {
		c.ConversationKeyHeader = HeaderConversationKey
	}
	if c.MaxInputBytes <= 0 {
		c.MaxInputBytes = DefaultMaxInputBytes
	}
	return c
}

// maxJSONBody is how large a JSON body may be before it is refused without
// parsing: JSON escaping can take up to six bytes per input byte (\u0001),
// plus room for the conversation key and the syntax.
func (c Contract) maxJSONBody() int { return 6*c.MaxInputBytes + 16<<10 }

// The JSON body's keys, exactly as a body must spell them.
const (
	keyInput           = "input"
	keyConversationKey = "conversation_key"
)

// Decode reads an event from a message body and headers, as Read does for
// a message with no subject and no JetStream metadata. When the message
// breaks the contract it returns the Reason and an error saying what is
// wrong; such a message is dead-lettered without calling the API. The
// returned event has no idempotency key; see IdempotencyKey. c is resolved
// (Contract.WithDefaults): a route's is, from when the relay is built.
func (c Contract) Decode(data []byte, h nats.Header) (agentapi.Event, deadletter.Reason, error) {
	if c.Format == BodyCloudEvents || c.Mapping != nil {
		d := c.Read(context.Background(), Message{Data: data, Header: h})
		d.Event.IdempotencyKey = ""
		return d.Event, d.Reason, d.Err
	}
	return c.decodeBody(data, h)
}

// decodeBody reads the input and conversation key of a JSON or text body.
func (c Contract) decodeBody(data []byte, h nats.Header) (agentapi.Event, deadletter.Reason, error) {
	var ev agentapi.Event
	switch c.Format {
	case BodyText:
		if len(data) > c.MaxInputBytes {
			return ev, deadletter.ReasonInputTooLarge, fmt.Errorf("body is %d bytes, limit %d", len(data), c.MaxInputBytes)
		}
		if !utf8.Valid(data) {
			return ev, deadletter.ReasonInvalidUTF8, errors.New("body is not valid UTF-8")
		}
		if len(data) == 0 {
			return ev, deadletter.ReasonMissingInput, errors.New("body is empty")
		}
		ev.Input = string(data)
		var conflict bool
		ev.ConversationKey, conflict = LookupHeader(h, c.ConversationKeyHeader)
		if conflict {
			return agentapi.Event{}, deadletter.ReasonInvalidConversationKey, fmt.Errorf("%s headers in different cases carry different values", c.ConversationKeyHeader)
		}
	default:
		if len(data) > c.maxJSONBody() {
			return ev, deadletter.ReasonInputTooLarge, fmt.Errorf("body is %d bytes, limit %d", len(data), c.maxJSONBody())
		}
		// encoding/json would silently replace invalid UTF-8 with U+FFFD:
		// refuse it instead of sending a mangled input.
		if !utf8.Valid(data) {
			return ev, deadletter.ReasonInvalidUTF8, errors.New("body is not valid UTF-8")
		}
		f, ok := decodeFast(data)
		if !ok {
			var err error
			if f, err = decodeStrict(data); err != nil {
				return ev, deadletter.ReasonInvalidJSON, err
			}
			if mangled(data, f.input, f.conversationKey) {
				// A lone surrogate escape (\ud800): encoding/json
				// turns it into U+FFFD; refuse rather than send that.
				return ev, deadletter.ReasonInvalidUTF8, errors.New("body has an escape that is not a Unicode character (a lone surrogate)")
			}
		}
		if f.input == "" {
			return ev, deadletter.ReasonMissingInput, errors.New(`"input" is missing or empty`)
		}
		if len(f.input) > c.MaxInputBytes {
			return ev, deadletter.ReasonInputTooLarge, fmt.Errorf("input is %d bytes, limit %d", len(f.input), c.MaxInputBytes)
		}
		ev.Input = f.input
		ev.ConversationKey = f.conversationKey
	}
	if err := agentapi.ValidateConversationKey(ev.ConversationKey); err != nil {
		return agentapi.Event{}, deadletter.ReasonInvalidConversationKey, err
	}
	return ev, "", nil
}

// mangled reports whether decoding produced more U+FFFD in the fields than
// the body holds, as the character itself or as its escape: the extra ones
// came from escapes that are not characters.
func mangled(data []byte, fields ...string) bool {
	n := 0
	for _, f := range fields {
		n += strings.Count(f, string(utf8.RuneError))
	}
	if n == 0 {
		return false
	}
	return n > bytes.Count(data, []byte(string(utf8.RuneError)))+bytes.Count(bytes.ToLower(data), []byte(`\ufffd`))
}

// decodeStrict decodes a body the fast path did not take: exactly one JSON
// object whose keys are "input" and "conversation_key", each at most once and
// spelt exactly so after unescaping, with string or null values.
//
// Unknown keys are refused so that a misspelt "conversation_key" is not
// dropped silently (the agent would start a new conversation with nobody
// noticing). Case variants and repeats are refused because encoding/json
// alone would take them: it matches keys without regard to case, with
// Unicode folding ("conversation_\u212aey", with a Kelvin sign, is its
// conversation_key), and lets the last of repeated keys win. A filter
// upstream that reads exact keys, or the first of two, would then see a
// different event from the one the agent gets. So the object is walked
// token by token here; encoding/json's tokenizer still does the syntax and
// the unescaping.
func decodeStrict(data []byte) (bodyFields, error) {
	var fail bodyFields
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return fail, errors.New("body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return fail, notJSON(err)
	}
	var f bodyFields
	var seenInput, seenKey bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fail, notJSON(err)
		}
		key, _ := tok.(string) // the decoder gives only strings as object keys
		var dst *string
		switch key {
		case keyInput:
			if seenInput {
				return fail, fmt.Errorf("body has the key %q more than once", key)
			}
			seenInput, dst = true, &f.input
		case keyConversationKey:
			if seenKey {
				return fail, fmt.Errorf("body has the key %q more than once", key)
			}
			seenKey, dst = true, &f.conversationKey
		default:
			return fail, unknownKey(key)
		}
		v, err := dec.Token()
		if err != nil {
			return fail, notJSON(err)
		}
		switch v := v.(type) {
		case string:
			*dst = v
		case nil:
		default:
			return fail, fmt.Errorf("%q is a JSON %s, not a string", key, jsonKind(v))
		}
	}
	if _, err := dec.Token(); err != nil {
		return fail, notJSON(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fail, errors.New("body has data after the JSON object")
	}
	return f, nil
}

// jsonKind names the kind of a JSON value from its first token.
func jsonKind(tok json.Token) string {
	switch tok {
	case json.Delim('{'):
		return "object"
	case json.Delim('['):
		return "array"
	case true, false:
		return "boolean"
	}
	return "number"
}

func notJSON(err error) error {
	return fmt.Errorf("body is not the API's JSON: %w", boundedError{err, maxDecodeError})
}

// unknownKey says what is wrong with a key that is neither "input" nor
// "conversation_key", naming the key it resembles when it is a case variant.
// The key is quoted in ASCII (a Kelvin sign shows as \u212a, not as a K)
// and cut short: it comes from the producer and goes into a header.
func unknownKey(key string) error {
	const maxShown = 64
	shown := key
	if len(shown) > maxShown {
		shown = strings.ToValidUTF8(shown[:maxShown], "") + "..."
	}
	for _, known := range []string{keyInput, keyConversationKey} {
		if strings.EqualFold(key, known) {
			return fmt.Errorf("the key %+q is not %q: keys are matched exactly, without case folding", shown, known)
		}
	}
	return fmt.Errorf("body has the unknown key %+q (the keys are %q and %q)", shown, keyInput, keyConversationKey)
}

// maxDecodeError bounds the text of a decoding error. encoding/json quotes
// an unknown field's name, which a producer can make as long as the body,
// and the text goes into logs and the dead letter's error header.
const maxDecodeError = 256

// boundedError is err with its text cut to n bytes (and made one line); it
// still unwraps to err.
type boundedError struct {
	err error
	n   int
}

func (e boundedError) Error() string { return deadletter.OneLine(e.err.Error(), e.n) }
func (e boundedError) Unwrap() error { return e.err }

// bodyFields are a decoded body's fields; a missing or null field is "".
type bodyFields struct{ input, conversationKey string }

// decodeFast decodes the usual body without reflection: one object with
// "input" and, optionally, "conversation_key", each once, spelt exactly so,
// with string values, and only JSON whitespace around tokens. It reports
// ok=false for anything else (other or differently spelt keys, escapes in
// keys, null or non-string values, repeated keys, syntax errors, surrogate
// escapes, control characters), and decodeStrict then decides: whenever
// decodeFast says ok, it has the result decodeStrict would have. data must
// be valid UTF-8.
//
// It earns its place: on the usual body it takes ~0.5 µs and 2 allocations
// where decodeStrict takes ~8.5 µs and 32 (json.Unmarshal, which could not
// enforce the key rules, ~4.9 µs and 9), so ~8 % of a message's ~100 µs of
// worker CPU, and ~70 µs for a 4 KiB input (see BENCHMARKS.md, 2026-11-30).
func decodeFast(data []byte) (f bodyFields, ok bool) {
	var fail bodyFields
	var seenInput, seenKey bool
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return fail, false
	}
	i = skipWS(data, i+1)
	for {
		if i >= len(data) || data[i] != '"' {
			return fail, false
		}
		j := i + 1
		for j < len(data) && data[j] != '"' && data[j] != '\\' {
			j++
		}
		if j >= len(data) || data[j] != '"' {
			return fail, false
		}
		key := data[i+1 : j]
		i = skipWS(data, j+1)
		if i >= len(data) || data[i] != ':' {
			return fail, false
		}
		i = skipWS(data, i+1)
		v, next, vok := fastString(data, i)
		if !vok {
			return fail, false
		}
		switch string(key) {
		case keyInput:
			if seenInput {
				return fail, false
			}
			seenInput, f.input = true, v
		case keyConversationKey:
			if seenKey {
				return fail, false
			}
			seenKey, f.conversationKey = true, v
		default:
			return fail, false
		}
		i = skipWS(data, next)
		if i >= len(data) {
			return fail, false
		}
		if data[i] == '}' {
			break
		}
		if data[i] != ',' {
			return fail, false
		}
		i = skipWS(data, i+1)
	}
	if skipWS(data, i+1) != len(data) {
		return fail, false
	}
	return f, true
}

func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// fastString decodes the JSON string starting at data[i] (a '"') as
// encoding/json would, and returns the index after it. It gives up (ok=false)
// on what it does not handle: control characters (invalid JSON) and \u
// escapes of surrogates.
func fastString(data []byte, i int) (s string, next int, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return "", 0, false
	}
	i++
	start := i
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			return string(data[start:i]), i + 1, true
		case c == '\\':
			return unescapeString(data, start)
		case c < 0x20:
			return "", 0, false
		}
		i++
	}
	return "", 0, false
}

// unescapeString is fastString's slow half, for strings with escapes.
func unescapeString(data []byte, start int) (string, int, bool) {
	out := make([]byte, 0, len(data)-start)
	for i := start; i < len(data); {
		c := data[i]
		switch {
		case c == '"':
			return string(out), i + 1, true
		case c < 0x20:
			return "", 0, false
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(data) {
			return "", 0, false
		}
		switch e := data[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+6 > len(data) {
				return "", 0, false
			}
			r, hok := hex4(data[i+2 : i+6])
			if !hok || utf16.IsSurrogate(r) {
				return "", 0, false
			}
			out = utf8.AppendRune(out, r)
			i += 6
			continue
		default:
			return "", 0, false
		}
		i += 2
	}
	return "", 0, false
}

// hex4 parses the four hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// LookupHeader returns the first value of header name, matching the name
// exactly first and then without regard to case: NATS headers are
// case-sensitive, but producers in other languages do not always keep the
// canonical form. Among case variants it takes the first in sorted order, so
// the answer is the same on every redelivery (map order is not). It also
// reports whether case variants of the name carry different values: for a
// key, that is a message that cannot say which key it means.
func LookupHeader(h nats.Header, name string) (value string, conflict bool) {
	if v, ok := h[name]; ok && len(v) > 0 {
		value = v[0]
		for k, vv := range h {
			if k != name && len(vv) > 0 && strings.EqualFold(k, name) && vv[0] != value {
				conflict = true
			}
		}
		return value, conflict
	}
	found := ""
	for k, vv := range h {
		if len(vv) == 0 || !strings.EqualFold(k, name) {
			continue
		}
		if found != "" && vv[0] != value {
			conflict = true
		}
		if found == "" || k < found {
			found, value = k, vv[0]
		}
	}
	return value, conflict
}

// IdempotencyKey returns the Idempotency-Key for a message, the same on every
// redelivery:
//
//  1. the message's Idempotency-Key header, when set (dead-letter replay sets
//     it to keep the original key);
//  2. else its Nats-Msg-Id, when the producer set one;
//  3. else a key derived from the stream name, the stream sequence and the
//     time the message was stored. The timestamp keeps a sequence number
//     reused after broker data loss from aliasing an earlier event.
//
// An explicit key or message id that is not a valid idempotency key is an
// error (the message is poison): it is never rewritten, since a rewritten key
// would not match what the producer meant.
//
// A CloudEvents route's key comes from the event itself between 2 and 3
// (see Contract.Read and CloudEventKey): IdempotencyKey, which reads only
// headers and metadata, gives the derived key for such a message.
func IdempotencyKey(h nats.Header, md *jetstream.MsgMetadata) (string, error) {
	k, err := headerKey(h)
	if k != "" || err != nil {
		return k, err
	}
	return DerivedKey(md.Stream, md.Sequence.Stream, md.Timestamp.UnixNano()), nil
}

// headerKey is the key a message's headers set: its Idempotency-Key, else
// its Nats-Msg-Id, else "".
func headerKey(h nats.Header) (string, error) {
	for _, name := range []string{HeaderIdempotencyKey, jetstream.MsgIDHeader} {
		k, conflict := LookupHeader(h, name)
		if conflict {
			return "", fmt.Errorf("%w: %s headers in different cases carry different values", agentapi.ErrInvalidIdempotencyKey, name)
		}
		if k == "" {
			continue
		}
		if err := agentapi.ValidateIdempotencyKey(k); err != nil {
			return "", fmt.Errorf("%s header: %w", name, err)
		}
		return k, nil
	}
	return "", nil
}

// DerivedKey is the idempotency key of a message without a message id:
// "<stream>:<sequence>:<unix-nanos>". A stream name with characters that a
// key may not hold is hex-encoded behind "x.", which keeps the key valid and
// cannot collide with a real name (stream names cannot contain '.').
func DerivedKey(stream string, seq uint64, unixNano int64) string {
	name := stream
	for i := 0; i < len(name); i++ {
		if !agentapi.IsIdempotencyKeyByte(name[i]) || name[i] == '.' {
			name = "x." + hex.EncodeToString([]byte(stream))
			break
		}
	}
	b := make([]byte, 0, len(name)+42)
	b = append(b, name...)
	b = append(b, ':')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, unixNano, 10)
	if len(b) > agentapi.MaxIdempotencyKeyLen {
		// Only a stream name near NATS's 255-byte limit gets here; keep
		// the distinguishing tail.
		b = b[len(b)-agentapi.MaxIdempotencyKeyLen:]
	}
	return string(b)
}
