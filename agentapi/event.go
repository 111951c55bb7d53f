package agentapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Event is one trigger event: the request body fields and the idempotency key.
type Event struct {
	Input           string // required, non-empty, valid UTF-8
	ConversationKey string // optional; omitted from the body when empty
	IdempotencyKey  string // optional; sent as the Idempotency-Key header when set
}

// MaxIdempotencyKeyLen bounds an Idempotency-Key. Keys are ids (a message id,
// a stream:sequence pair), and common APIs cap them at 255.
const MaxIdempotencyKeyLen = 255

// Named validation errors, for errors.Is.
var (
	ErrEmptyInput             = errors.New("agentapi: input is empty")
	ErrInvalidUTF8            = errors.New("agentapi: text is not valid UTF-8")
	ErrInvalidIdempotencyKey  = errors.New("agentapi: invalid idempotency key")
	ErrInvalidConversationKey = errors.New("agentapi: invalid conversation key")
)

// MaxConversationKeyLen bounds a conversation key.
const MaxConversationKeyLen = 1024

// Validate reports why the event cannot be sent, or nil.
func (e Event) Validate() error {
	if e.Input == "" {
		return ErrEmptyInput
	}
	if !utf8.ValidString(e.Input) {
		return fmt.Errorf("%w: input", ErrInvalidUTF8)
	}
	if err := ValidateConversationKey(e.ConversationKey); err != nil {
		return err
	}
	if e.IdempotencyKey != "" {
		return ValidateIdempotencyKey(e.IdempotencyKey)
	}
	return nil
}

// ValidateIdempotencyKey accepts 1 to MaxIdempotencyKeyLen characters from
// A-Z a-z 0-9 and . _ : @ + = ~ -, without "..". That covers UUIDs, ULIDs,
// base64url and "stream:sequence" ids, and rules out what could split a
// header (CR, LF, NUL), be decoded or normalised differently by something in
// the way ('%', '/', '\', non-ASCII look-alikes) so that two retries no
// longer carry the same key, or be taken for a path by a server that stores
// keys in one.
func ValidateIdempotencyKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: empty", ErrInvalidIdempotencyKey)
	}
	if len(k) > MaxIdempotencyKeyLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidIdempotencyKey, MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if !IsIdempotencyKeyByte(k[i]) {
			return fmt.Errorf("%w: byte %d (%q) is not allowed", ErrInvalidIdempotencyKey, i, k[i])
		}
		if k[i] == '.' && i > 0 && k[i-1] == '.' {
			return fmt.Errorf("%w: contains \"..\"", ErrInvalidIdempotencyKey)
		}
	}
	return nil
}

// IsIdempotencyKeyByte reports whether c may appear in an idempotency key.
func IsIdempotencyKeyByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '.', '_', ':', '@', '+', '=', '~', '-':
		return true
	}
	return false
}

// ValidateConversationKey accepts an empty key or up to MaxConversationKeyLen
// bytes of valid UTF-8 without control characters.
func ValidateConversationKey(k string) error {
	if len(k) > MaxConversationKeyLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidConversationKey, MaxConversationKeyLen)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidConversationKey)
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: contains a control character", ErrInvalidConversationKey)
		}
	}
	return nil
}

// requestBody is the API's request body.
type requestBody struct {
	Input           string `json:"input"`
	ConversationKey string `json:"conversation_key,omitempty"`
}

// Body returns the JSON request body for e:
// {"input":"...","conversation_key":"..."}, conversation_key omitted when
// empty, as encoding/json writes it (<, > and &, and U+2028/U+2029,
// escaped). A hand-written encoder saved about 0.3 µs a call, 0.3 % of a
// message's CPU, and was replaced (BENCHMARKS.md, 2026-11-30). The event
// should have passed Validate.
func (e Event) Body() ([]byte, error) {
	return json.Marshal(requestBody{Input: e.Input, ConversationKey: e.ConversationKey})
}
