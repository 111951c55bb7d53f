package agentapi

import (
	"errors"
	"fmt"
)

// MaxTriggerIDLen bounds a trigger id. The API does not publish a limit; ids
// seen in practice are short, and a bound keeps a hostile id from growing a
// request line or a log line without limit.
const MaxTriggerIDLen = 128

const triggerIDPrefix = "agtch_"

// ErrInvalidTriggerID is returned for an id that is not "agtch_" followed by
// letters, digits, '_' or '-'.
var ErrInvalidTriggerID = errors.New("agentapi: invalid trigger id")

// TriggerID is the public API trigger identifier of a published agent channel
// ("agtch_..."). Only ParseTriggerID makes one, so holding a TriggerID means
// it was validated: it cannot contain '/', '%', '.', whitespace or anything
// else that could change which URL a request goes to.
type TriggerID struct{ id string }

// ParseTriggerID validates s as a trigger id.
func ParseTriggerID(s string) (TriggerID, error) {
	if err := ValidateTriggerID(s); err != nil {
		return TriggerID{}, err
	}
	return TriggerID{id: s}, nil
}

// ValidateTriggerID reports why s is not a valid trigger id, or nil.
// The error never quotes more than a short, escaped prefix of s.
func ValidateTriggerID(s string) error {
	if len(s) <= len(triggerIDPrefix) || s[:len(triggerIDPrefix)] != triggerIDPrefix {
		return fmt.Errorf("%w: must be %q followed by letters, digits, '_' or '-' (got %s)", ErrInvalidTriggerID, triggerIDPrefix, quoteShort(s))
	}
	if len(s) > MaxTriggerIDLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidTriggerID, MaxTriggerIDLen)
	}
	for i := len(triggerIDPrefix); i < len(s); i++ {
		if !isIDByte(s[i]) {
			return fmt.Errorf("%w: byte %d is not a letter, digit, '_' or '-' (got %s)", ErrInvalidTriggerID, i, quoteShort(s))
		}
	}
	return nil
}

func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// String returns the id.
func (t TriggerID) String() string { return t.id }

// IsZero reports whether t is the zero TriggerID (never validated).
func (t TriggerID) IsZero() bool { return t.id == "" }

// quoteShort quotes at most the first 40 bytes of s, escaping anything
// unprintable, so error messages stay bounded and terminal-safe.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
