package consumer

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
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
)

// Message headers producers may set.
const (
	// HeaderIdempotencyKey overrides the message id as the Idempotency-Key.
	// Dead-letter replay sets it so that a replayed event keeps its key.
	HeaderIdempotencyKey = "Idempotency-Key"
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

// jsonBody is the API's request body as a producer sends it. Pointers tell
// a missing field from an empty one.
type jsonBody struct {
	Input           *string `json:"input"`
	ConversationKey *string `json:"conversation_key"`
}

// Decode reads an event from a message body and headers. When the message
// breaks the contract it returns the Reason and an error saying what is
// wrong; such a message is dead-lettered without calling the API. The
// returned event has no idempotency key; see IdempotencyKey.
func (c Contract) Decode(data []byte, h nats.Header) (agentapi.Event, Reason, error) {
	c = c.WithDefaults()
	var ev agentapi.Event
	switch c.Format {
	case BodyText:
		if len(data) > c.MaxInputBytes {
			return ev, ReasonInputTooLarge, fmt.Errorf("body is %d bytes, limit %d", len(data), c.MaxInputBytes)
		}
		if !utf8.Valid(data) {
			return ev, ReasonInvalidUTF8, errors.New("body is not valid UTF-8")
		}
		if len(data) == 0 {
			return ev, ReasonMissingInput, errors.New("body is empty")
		}
		ev.Input = string(data)
		ev.ConversationKey = HeaderValue(h, c.ConversationKeyHeader)
	default:
		if len(data) > c.maxJSONBody() {
			return ev, ReasonInputTooLarge, fmt.Errorf("body is %d bytes, limit %d", len(data), c.maxJSONBody())
		}
		// encoding/json would silently replace invalid UTF-8 with U+FFFD:
		// refuse it instead of sending a mangled input.
		if !utf8.Valid(data) {
			return ev, ReasonInvalidUTF8, errors.New("body is not valid UTF-8")
		}
		var b jsonBody
		if err := decodeStrict(data, &b); err != nil {
			return ev, ReasonInvalidJSON, err
		}
		if b.Input == nil || *b.Input == "" {
			return ev, ReasonMissingInput, errors.New(`"input" is missing or empty`)
		}
		if len(*b.Input) > c.MaxInputBytes {
			return ev, ReasonInputTooLarge, fmt.Errorf("input is %d bytes, limit %d", len(*b.Input), c.MaxInputBytes)
		}
		ev.Input = *b.Input
		if b.ConversationKey != nil {
			ev.ConversationKey = *b.ConversationKey
		}
	}
	if err := agentapi.ValidateConversationKey(ev.ConversationKey); err != nil {
		return agentapi.Event{}, ReasonInvalidConversationKey, err
	}
	return ev, "", nil
}

// decodeStrict decodes exactly one JSON object with no unknown fields: a
// misspelt "conversation_key" must not be dropped silently, or the agent
// would start a new conversation with nobody noticing.
func decodeStrict(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 || bytes.TrimSpace(data)[0] != '{' {
		return errors.New("body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body is not the API's JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("body has data after the JSON object")
	}
	return nil
}

// HeaderValue returns the first value of header name, matching the name
// exactly first and then without regard to case: NATS headers are
// case-sensitive, but producers in other languages do not always keep the
// canonical form.
func HeaderValue(h nats.Header, name string) string {
	if v, ok := h[name]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return v[0]
		}
	}
	return ""
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
func IdempotencyKey(h nats.Header, md *jetstream.MsgMetadata) (string, error) {
	if k := HeaderValue(h, HeaderIdempotencyKey); k != "" {
		if err := agentapi.ValidateIdempotencyKey(k); err != nil {
			return "", fmt.Errorf("%s header: %w", HeaderIdempotencyKey, err)
		}
		return k, nil
	}
	if k := HeaderValue(h, jetstream.MsgIDHeader); k != "" {
		if err := agentapi.ValidateIdempotencyKey(k); err != nil {
			return "", fmt.Errorf("%s header: %w", jetstream.MsgIDHeader, err)
		}
		return k, nil
	}
	return DerivedKey(md.Stream, md.Sequence.Stream, md.Timestamp.UnixNano()), nil
}

// DerivedKey is the idempotency key of a message without a message id:
// "<stream>:<sequence>:<unix-nanos>". A stream name with characters that a
// key may not hold is hex-encoded behind an "x" so the key stays valid and
// distinct.
func DerivedKey(stream string, seq uint64, unixNano int64) string {
	name := stream
	for i := 0; i < len(name); i++ {
		if !agentapi.IsIdempotencyKeyByte(name[i]) || name[i] == '.' {
			name = "x" + hex.EncodeToString([]byte(stream))
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
