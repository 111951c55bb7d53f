package agentapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ParseRetryAfter parses a Retry-After header value: either delay-seconds
// (a non-negative integer) or an HTTP-date (RFC 9110 §10.2.3), relative to
// now. It reports false for an empty, negative or unparseable value. A date
// in the past gives 0 with ok true: "retry now" is a valid answer. Callers cap
// the result: the header is untrusted and may say "in ten years".
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if c := v[0]; c >= '0' && c <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return maxRetryAfter, true
			}
			return 0, false
		}
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		return 0, true
	}
	if d > maxRetryAfter {
		// Sub saturates at ~292 years; clamp to a sane ceiling so callers
		// never do arithmetic near the int64 limit.
		return maxRetryAfter, true
	}
	return d, true
}

// maxRetryAfter is the ceiling ParseRetryAfter returns; callers apply their
// own, much lower cap.
const maxRetryAfter = 365 * 24 * time.Hour
