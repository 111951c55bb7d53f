package telemetry_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// hostileValues are what a message, a subject, a NATS error or an API
// answer could smuggle into a log line: terminal escape sequences (clear
// screen, set the window title), line breaks that forge a log line, NUL,
// BEL, DEL, C1 controls, bidi overrides, invalid UTF-8.
var hostileValues = []string{
	"\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "line\nforged=entry level=ERROR", "cr\roverwrite", "nul\x00byte",
	"bel\x07", "del\x7f", "c1 csi \u009b31m", "bidi \u202eevil\u202c", "tab\there", "\x1b", "\x1b[",
}

// unsafeText is what must not reach a terminal raw from a text log: C0
// controls but the record's own newline, C1 controls (CSI is one) and bidi
// overrides. DEL is left out: tint lets it through, and terminals ignore it.
func unsafeText(r rune) bool {
	return r != '\n' && (r < 0x20 || (r >= 0x80 && r < 0xa0) || unicode.Is(unicode.Bidi_Control, r))
}

// unsafeJSON is what JSON must escape: C0 controls. (C1, bidi and DEL are
// valid JSON text; JSON logs are for collectors, not terminals.)
func unsafeJSON(r rune) bool { return r != '\n' && r < 0x20 }

// checkLine fails for raw control characters or forged line breaks in a
// log record.
func checkLine(t *testing.T, format, out string) {
	t.Helper()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Errorf("%s: one record became %d lines: %q", format, strings.Count(out, "\n"), out)
	}
	unsafe := unsafeText
	if format == "json" {
		unsafe = unsafeJSON
	}
	if !utf8.ValidString(out) || strings.ContainsFunc(out, unsafe) {
		t.Errorf("%s: raw control characters in %q", format, out)
	}
}

// Logs written to a file or a pipe (text and JSON) neutralise control
// characters and escape sequences in every attribute value, key, group and
// error: one record is one line, and nothing in it acts on a terminal.
func TestLogsNeutraliseControlCharacters(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		for _, v := range hostileValues {
			var buf bytes.Buffer
			log, err := telemetry.NewLogger(&buf, slog.LevelDebug, format)
			if err != nil {
				t.Fatal(err)
			}
			log.With("route", v).WithGroup("g"+v).Info("dead-lettered",
				"subject", v, v, "as a key", "err", errors.New("nats: "+v), slog.Group("nested", "value", v))
			checkLine(t, format, buf.String())
		}
	}
}

// Neutralising does not cut: a value with an invalid byte, a U+FFFD or an
// ESC keeps the rest of its text. (tint alone, without colour, stops a
// value at the first invalid byte or U+FFFD and drops what follows an ESC
// up to the next letter: "err=decode failed at " and nothing more.)
func TestTextLogKeepsValuesWhole(t *testing.T) {
	for _, v := range []string{
		"decode failed at \xff: the real cause",
		"API said \ufffd: the real cause",
		"\x1b12345 the real cause",
	} {
		var buf bytes.Buffer
		log, err := telemetry.NewLogger(&buf, slog.LevelInfo, "text")
		if err != nil {
			t.Fatal(err)
		}
		log.Info("dead-lettered", "err", v)
		if !strings.Contains(buf.String(), "the real cause") {
			t.Errorf("value %q logged as %q: the rest of the value is gone", v, buf.String())
		}
	}
}
