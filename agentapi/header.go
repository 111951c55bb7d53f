package agentapi

import (
	"errors"
	"fmt"
	"strings"
)

// ErrHeaderValue is wrapped by CheckHeaderValue's errors: a value holds a
// byte that HTTP does not allow in a header field value.
var ErrHeaderValue = errors.New("byte not allowed in an HTTP header field value")

// maxBadBytesNamed bounds how many offending bytes an error names.
const maxBadBytesNamed = 3

// CheckHeaderValue returns nil when v can be sent as an HTTP header field
// value, and otherwise an error wrapping ErrHeaderValue that names the
// offending bytes by value and offset, never v itself: v is usually a
// token.
//
// The rule is RFC 9110's field-value, the one net/http enforces before it
// sends a request: no control characters (0x00-0x1f, 0x7f) except
// horizontal tab. Bytes 0x80-0xff (obs-text) pass. net/http refuses a
// request that breaks it locally, with an error that looks like any other
// transport failure; checking first lets a token that cannot be sent be
// reported as what it is.
func CheckHeaderValue(v string) error {
	var named []string
	n := 0
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
			n++
			if len(named) < maxBadBytesNamed {
				named = append(named, fmt.Sprintf("%s at offset %d", byteName(b), i))
			}
		}
	}
	if n == 0 {
		return nil
	}
	more := ""
	if n > len(named) {
		more = fmt.Sprintf(" and %d more", n-len(named))
	}
	return fmt.Errorf("%w: %s%s", ErrHeaderValue, strings.Join(named, ", "), more)
}

// byteName names a control byte the way an operator looking at the file
// with od or xxd would recognise it.
func byteName(b byte) string {
	switch b {
	case 0:
		return "NUL (0x00)"
	case '\n':
		return "line feed (0x0a)"
	case '\r':
		return "carriage return (0x0d)"
	case 0x1b:
		return "ESC (0x1b)"
	case 0x7f:
		return "DEL (0x7f)"
	default:
		return fmt.Sprintf("control byte 0x%02x", b)
	}
}
