package routestatus

import "time"

// Route health pauses a route's consumer (nats-server 2.11 and later) while
// the route is stopped, so that every replica stops, and marks each pause
// deadline it sets by its sub-second part: 424242430 nanoseconds plus a digit
// that names the condition. A replica only ever resumes or extends such a
// pause; an operator's pause (agentrelay pause, nats consumer pause) is left
// alone.

const (
	// healthPauseNanos is the sub-second part of every pause deadline route
	// health sets; its last digit is the condition's code.
	healthPauseNanos = 424_242_430
	// healthPauseCodes is how many codes the last digit holds.
	healthPauseCodes = 10
	// legacyHealthPauseNanos marked every pause of earlier versions: it
	// still reads as route health's, with no code.
	legacyHealthPauseNanos = 424_242_424
)

// HealthPauseUntil is the pause deadline route health sets to pause until
// about t for the condition numbered code (0 to 9): t rounded up past the
// next whole second, marked with the code.
func HealthPauseUntil(t time.Time, code int) time.Time {
	code = min(max(code, 0), healthPauseCodes-1)
	return t.Truncate(time.Second).Add(time.Second + time.Duration(healthPauseNanos+code))
}

// HealthPauseCode reports whether a consumer's pause deadline is one route
// health set (rather than an operator's pause), and the condition code it
// carries: -1 for a deadline an earlier version set, which names none.
func HealthPauseCode(until time.Time) (code int, ok bool) {
	n := until.Nanosecond()
	switch {
	case n == legacyHealthPauseNanos:
		return -1, true
	case n >= healthPauseNanos && n < healthPauseNanos+healthPauseCodes:
		return n - healthPauseNanos, true
	}
	return 0, false
}

// IsHealthPause reports whether a consumer's pause deadline is one route
// health set (rather than an operator's pause).
func IsHealthPause(until time.Time) bool {
	_, ok := HealthPauseCode(until)
	return ok
}
