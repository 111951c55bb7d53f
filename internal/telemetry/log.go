package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/term"
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
// Text output escapes control characters in values (tint quotes them), so a
// message cannot inject terminal escape sequences into an operator's screen.
func NewLogger(w io.Writer, level slog.Level, format string) (*slog.Logger, error) {
	tty := isTerminal(w)
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
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
	}
	return slog.New(tint.NewHandler(w, &tint.Options{
		Level:      level,
		TimeFormat: time.TimeOnly,
		NoColor:    !tty,
	})), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
