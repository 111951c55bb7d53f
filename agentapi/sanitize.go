package agentapi

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on the text an Error keeps of an answer. Errors end up in log
// lines, dead-letter headers and terminals; an operator needs a sentence,
// not a page.
const (
	// MaxErrorText bounds Error.Body and the text of a transport error.
	MaxErrorText = 300
	// maxStatusText bounds Error.Status: a code and a reason phrase.
	maxStatusText = 100
)

// sanitize is the one gate through which text the API sent (or anything in
// its place: a proxy, a gateway, a hostile server) reaches an error: a
// reason phrase, a body excerpt, a transport error quoting a header. What
// comes out is valid UTF-8 of printable characters and spaces only: C0 and
// C1 controls (ESC, BEL, CR, LF, ...), bidi and other format characters
// (U+200E, U+202E, U+2066, ...), line and paragraph separators and invalid
// bytes are written as Go-style escapes, so no terminal sequence or
// reordering survives and nothing is silently dropped. When max > 0 the
// result is at most max bytes, cut between characters (never inside an
// escape) and marked with "…".
//
// Token scrubbing happens before: see scrubber.
func sanitize(s string, max int) string {
	if isClean(s) && (max <= 0 || len(s) <= max) {
		return s
	}
	var sb strings.Builder
	if max > 0 {
		sb.Grow(min(len(s), max))
	} else {
		sb.Grow(len(s))
	}
	cut := -1 // where to cut, once the text is known not to fit: room left for the mark
	var esc [10]byte
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size == 1:
			piece = string(appendHex(append(esc[:0], `\x`...), uint64(s[i]), 2))
		case r == '\n':
			piece = `\n`
		case r == '\t':
			piece = `\t`
		case r == '\r':
			piece = `\r`
		case !printable(r) && r < 0x10000:
			piece = string(appendHex(append(esc[:0], `\u`...), uint64(r), 4))
		case !printable(r):
			piece = string(appendHex(append(esc[:0], `\U`...), uint64(r), 8))
		default:
			piece = s[i : i+size]
		}
		if max > 0 {
			if cut < 0 && sb.Len()+len(piece) > max-len(ellipsis) {
				cut = sb.Len()
			}
			if sb.Len()+len(piece) > max {
				return sb.String()[:cut] + ellipsis
			}
		}
		sb.WriteString(piece)
		i += size
	}
	return sb.String()
}

// ellipsis marks text cut by sanitize.
const ellipsis = "…"

// printable is what sanitize lets through unchanged: graphic characters
// (letters, marks, numbers, punctuation, symbols) and the ASCII space.
// unicode.IsPrint excludes the control (Cc), format (Cf: bidi controls,
// zero-width characters), private use, unassigned and separator categories.
func printable(r rune) bool { return r == ' ' || unicode.IsPrint(r) }

func isClean(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < ' ' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || !printable(r) {
			return false
		}
		i += size
	}
	return true
}

func appendHex(b []byte, v uint64, width int) []byte {
	h := strconv.FormatUint(v, 16)
	for range width - len(h) {
		b = append(b, '0')
	}
	return append(b, h...)
}

// SanitizeText returns b as a string safe to put in a log line or a
// terminal: invalid UTF-8, control characters (including ESC, so no
// terminal escape sequence survives) and bidi or other format characters are
// replaced by Go-style escapes. Its length is not bounded; the client bounds
// what it keeps of an answer itself.
func SanitizeText(b []byte) string { return sanitize(string(b), 0) }
