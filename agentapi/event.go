package agentapi

import (
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

// AppendBody appends the JSON request body for e to dst:
// {"input":"...","conversation_key":"..."}, conversation_key omitted when
// empty. It escapes exactly as encoding/json does for valid UTF-8 (including
// <, > and &, and U+2028/U+2029), without reflection or intermediate copies.
// The event must have passed Validate.
func (e Event) AppendBody(dst []byte) []byte {
	dst = append(dst, `{"input":`...)
	dst = appendJSONString(dst, e.Input)
	if e.ConversationKey != "" {
		dst = append(dst, `,"conversation_key":`...)
		dst = appendJSONString(dst, e.ConversationKey)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		if r == utf8.RuneError && size == 1 {
			// Validate rejects invalid UTF-8 before we get here; encode
			// the replacement character like encoding/json would rather
			// than emit invalid JSON.
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
