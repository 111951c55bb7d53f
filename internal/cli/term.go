package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/agentrelay/agentrelay/agentapi"
)

// What the commands print comes in good part from outside: dead letters'
// headers and bodies (anyone's who may publish), the server's answers, the
// configuration, the command line. A terminal acts on some of it: ESC
// sequences clear the screen or retitle the window, C1 controls do the
// same on some terminals, bidi controls reorder what a reader sees. So
// every line a command prints goes through one sanitiser, safe: via
// printf for text, via writeJSON for JSON, via printError for errors.
// The one deliberate escape sequence is `status --watch` clearing a
// terminal between refreshes.

// safe is the sanitiser: it escapes control characters, escape sequences,
// bidi and other invisible formatting, and invalid UTF-8 (Go-style, so
// the text stays readable), and bounds the length when max > 0.
func safe(s string, max int) string {
	s = agentapi.SanitizeText([]byte(s))
	if max > 0 && len(s) > max {
		cut := max
		for cut > 0 && s[cut]&0xc0 == 0x80 {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// printf is fmt.Fprintf with every string, error and Stringer argument
// passed through safe. The format itself is the program's own text.
func printf(w io.Writer, format string, a ...any) {
	for i, v := range a {
		switch x := v.(type) {
		case string:
			a[i] = safe(x, 0)
		case error:
			a[i] = safe(x.Error(), 0)
		case fmt.Stringer:
			a[i] = safe(x.String(), 0)
		}
	}
	fmt.Fprintf(w, format, a...)
}

// printError prints an error, each of its lines sanitised (configuration
// errors list one problem a line).
func printError(w io.Writer, prefix string, err error) {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = safe(l, 0)
	}
	fmt.Fprintln(w, prefix+strings.Join(lines, "\n"))
}

// writeJSON writes v as one line of JSON: every --json output is JSON
// Lines (one object a line: one for a report, one an item for a list, one
// a refresh for --watch), so that jq, a log shipper or a script reads any
// command's output alike. Everything safe would escape is written as a \u
// escape: the data decode the same, and a terminal sees nothing it would
// act on. encoding/json already escapes C0 controls, but not DEL, C1
// controls or bidi controls.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(jsonForTerminal(b), '\n'))
	return err
}

// jsonForTerminal escapes, in encoded JSON, every rune safe would escape.
// Outside strings JSON holds only printable ASCII, spaces and newlines, so
// such runes are inside strings, where a \u escape means the same rune.
func jsonForTerminal(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == '\n' || r == ' ' || unicode.IsPrint(r) {
			out = append(out, b[i:i+size]...)
		} else if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += size
	}
	return out
}
