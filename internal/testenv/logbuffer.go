package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
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

// Records parses what a JSON slog handler wrote so far, one record per
// line, and returns those of level ("" for every level). A line that is
// not JSON is an error.
func (l *LogBuffer) Records(level string) ([]map[string]any, error) {
	sc := bufio.NewScanner(bytes.NewReader([]byte(l.String())))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []map[string]any
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("log line %q: %w", sc.Text(), err)
		}
		if level == "" || rec["level"] == level {
			out = append(out, rec)
		}
	}
	return out, sc.Err()
}
