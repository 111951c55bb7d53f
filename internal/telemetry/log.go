package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lmittmann/tint"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/term"

	"github.com/agentrelay/agentrelay/internal/redact"
)

// ParseLevel parses debug, info, warn (or warning) and error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

// NewLogger returns a logger writing to w. Format "text" is tint's coloured,
// human-readable output (colour only when w is a terminal); "json" is one
// JSON object per line; "auto" picks text on a terminal and JSON otherwise,
// which is what a log collector wants from a container.
//
// Both formats write durations as people read them ("1.922s", not
// 1922086327 nanoseconds) and hide the user info and query of URLs in
// messages, strings and errors (see redact.URLs).
//
// Text output escapes control characters in values (tint quotes them), so a
// message cannot inject terminal escape sequences into an operator's screen.
//
// A line logged with a context that holds a span carries the span's
// trace_id and span_id (see WithTraceIDs).
func NewLogger(w io.Writer, level slog.Level, format string) (*slog.Logger, error) {
	tty := IsTerminal(w)
	switch format {
	case "auto", "":
		if tty {
			format = "text"
		} else {
			format = "json"
		}
	case "text", "json":
	default:
		return nil, fmt.Errorf("unknown log format %q (want auto, text or json)", format)
	}
	if format == "json" {
		return slog.New(WithTraceIDs(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: jsonValue}))), nil
	}
	return slog.New(WithTraceIDs(tint.NewTextHandler(w, &tint.Options{
		Level:       level,
		TimeFormat:  time.TimeOnly,
		NoColor:     !tty,
		ReplaceAttr: neutralise,
	}))), nil
}

// Keys of the trace context in a log line, as OpenTelemetry's log data
// model names them: a log pipeline (Loki's derived fields, Elasticsearch,
// Datadog) links a line holding them to its trace.
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// WithTraceIDs wraps h so that a record logged with a context that holds a
// valid span context (trace.SpanContextFromContext: a span started from
// it, or a remote parent such as a producer's traceparent) carries the
// span's ids as TraceIDKey and SpanIDKey, 32 and 16 lowercase hex digits.
// Only the *Context methods and Log/LogAttrs pass a context: a record
// logged with Info (context.Background) carries none. Without a span the
// record goes to h unchanged, at no cost. The ids land in the logger's
// open group, if any (agentrelay's loggers open none).
func WithTraceIDs(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			r.AddAttrs(slog.String(TraceIDKey, sc.TraceID().String()), slog.String(SpanIDKey, sc.SpanID().String()))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// jsonValue is the JSON handler's ReplaceAttr: readable durations, and
// URLs redacted in the message, strings and errors.
func jsonValue(_ []string, a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindDuration:
		a.Value = slog.StringValue(FormatDuration(v.Duration()))
	case slog.KindString:
		if s := v.String(); strings.Contains(s, "://") {
			a.Value = slog.StringValue(redact.URLs(s))
		}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			if s := err.Error(); strings.Contains(s, "://") {
				a.Value = slog.StringValue(redact.URLs(s))
			}
		}
	}
	return a
}

// FormatDuration writes d for people: to the millisecond from a second
// up, to the microsecond from a millisecond up, exact below ("1.922s",
// "2m30.5s", "12.345ms", "850ns").
func FormatDuration(d time.Duration) string {
	switch abs := d.Abs(); {
	case abs >= time.Second:
		d = d.Round(time.Millisecond)
	case abs >= time.Millisecond:
		d = d.Round(time.Microsecond)
	}
	return d.String()
}

// neutralise makes string, error and other non-scalar values safe for tint:
// values from messages and API answers must not drive the operator's
// terminal, and must not be cut short.
//
// tint cannot be trusted with them as they are. With colour it quotes a
// value and then turns every `\x1b` of the quoted form back into a raw ESC
// (to keep coloured values), so a raw ESC in a value, or even the four
// characters \x1b, reach the terminal as an escape sequence. Without colour
// it strips escape sequences by dropping everything from an ESC to the next
// letter, and drops the rest of a value at the first invalid UTF-8 byte or
// U+FFFD. So: ESC becomes "<ESC>", a literal \x1b becomes \x1B, invalid
// bytes become "<xNN>" and U+FFFD "<U+FFFD>"; every other control character
// is left to tint's quoting, which escapes it harmlessly.
//
// It also makes durations readable and redacts URLs, as jsonValue does.
func neutralise(_ []string, a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindDuration:
		a.Value = slog.StringValue(FormatDuration(v.Duration()))
	case slog.KindString:
		if s := v.String(); !termSafe(s) {
			a.Value = slog.StringValue(termText(redact.URLs(s)))
		}
	case slog.KindAny:
		s := fmt.Sprint(v.Any())
		if err, ok := v.Any().(error); ok {
			s = err.Error()
		}
		a.Value = slog.StringValue(termText(redact.URLs(s)))
	}
	return a
}

// termSafe reports whether s needs no change (the common case, so that
// logging stays allocation-free): nothing to escape, and no URL.
func termSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0x1b || c >= 0x80 || (c == '\\' && strings.HasPrefix(s[i:], `\x1b`)) || (c == ':' && strings.HasPrefix(s[i:], "://")) {
			return false
		}
	}
	return true
}

func termText(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "<x%02X>", s[i])
		case r == utf8.RuneError:
			b.WriteString("<U+FFFD>")
		case r == 0x1b:
			b.WriteString("<ESC>")
		case r == '\\' && strings.HasPrefix(s[i:], `\x1b`):
			b.WriteString(`\x1B`)
			size = 4
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// IsTerminal reports whether w is a terminal: the one check agentrelay
// makes before it colours logs, draws progress or clears a screen.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
