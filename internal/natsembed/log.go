package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"

	"github.com/nats-io/nats-server/v2/server"
)

// LevelTrace is the slog level at which the server's trace lines (protocol
// tracing) are forwarded. Tracing is enabled on the server only when the
// configured logger is enabled at this level.
const LevelTrace = slog.LevelDebug - 4

// serverLogger adapts the nats-server logging interface to log/slog. It is
// installed on every embedded server, also when no slog.Logger is configured,
// because it records the first fatal message: an embedded server that hits a
// fatal condition (for example a port that is already in use) logs it via
// Fatalf and returns instead of exiting the process.
type serverLogger struct {
	log *slog.Logger // nil: drop everything

	mu    sync.Mutex
	fatal error
}

var _ server.Logger = (*serverLogger)(nil)

func newServerLogger(l *slog.Logger, name string) *serverLogger {
	if l != nil {
		l = l.With(slog.String("nats_server", name))
	}
	return &serverLogger{log: l}
}

// levels reports which optional server log levels to switch on.
func (l *serverLogger) levels() (debug, trace bool) {
	if l.log == nil {
		return false, false
	}
	ctx := context.Background()
	return l.log.Enabled(ctx, slog.LevelDebug), l.log.Enabled(ctx, LevelTrace)
}

func (l *serverLogger) emit(level slog.Level, format string, v []any) {
	if l.log == nil || !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

// Noticef implements server.Logger (slog Info).
func (l *serverLogger) Noticef(format string, v ...any) { l.emit(slog.LevelInfo, format, v) }

// Warnf implements server.Logger (slog Warn).
func (l *serverLogger) Warnf(format string, v ...any) { l.emit(slog.LevelWarn, format, v) }

// Errorf implements server.Logger (slog Error).
func (l *serverLogger) Errorf(format string, v ...any) { l.emit(slog.LevelError, format, v) }

// Debugf implements server.Logger (slog Debug).
func (l *serverLogger) Debugf(format string, v ...any) { l.emit(slog.LevelDebug, format, v) }

// Tracef implements server.Logger (LevelTrace).
func (l *serverLogger) Tracef(format string, v ...any) { l.emit(LevelTrace, format, v) }

// Fatalf implements server.Logger. It logs at slog Error and records the
// message; it never exits the process.
func (l *serverLogger) Fatalf(format string, v ...any) {
	fe := &fatalError{msg: fmt.Sprintf(format, v...)}
	for _, a := range v {
		if err, ok := a.(error); ok {
			fe.cause = err
			break
		}
	}
	l.mu.Lock()
	if l.fatal == nil {
		l.fatal = fe
	}
	l.mu.Unlock()
	if l.log != nil {
		l.log.Error(fe.msg, slog.Bool("fatal", true))
	}
}

// fatalErr returns the first fatal message the server logged, if any.
func (l *serverLogger) fatalErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

// fatalError is a fatal server log line turned into an error. It unwraps to
// the error argument of the log call, if there was one.
type fatalError struct {
	msg   string
	cause error
}

func (e *fatalError) Error() string { return "nats-server: " + e.msg }
func (e *fatalError) Unwrap() error { return e.cause }

// isAddrInUse reports whether err means that a listen address was taken.
func isAddrInUse(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "address already in use") ||
		strings.Contains(s, "only one usage of each socket address")
}
