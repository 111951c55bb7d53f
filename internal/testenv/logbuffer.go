package testenv

import (
	"bytes"
	"sync"
)

// LogBuffer collects what a logger, a worker's goroutines or a child
// process write, for the test to read while they still write: a
// bytes.Buffer behind a mutex. The zero value is an empty buffer.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
