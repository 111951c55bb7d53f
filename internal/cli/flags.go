package cli

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Every numeric and duration flag is checked before a command reads its
// configuration or connects, and a bad value is refused naming the flag and
// what it may be: a watch every nanosecond or a rate of NaN is a typo, not a
// request.

// checkFlags joins the problems of a command's flags into one usage error.
func checkFlags(problems ...error) error {
	if err := errors.Join(problems...); err != nil {
		return usageError{err}
	}
	return nil
}

// intIn checks lo <= v <= hi; zero, when not empty, says what 0 means and
// allows it as well.
func intIn(flag string, v, lo, hi int, zero string) error {
	if (zero != "" && v == 0) || (v >= lo && v <= hi) {
		return nil
	}
	if zero != "" {
		return fmt.Errorf("--%s %d: must be 0 (%s) or from %d to %d", flag, v, zero, lo, hi)
	}
	return fmt.Errorf("--%s %d: must be from %d to %d", flag, v, lo, hi)
}

// durationIn is intIn for durations.
func durationIn(flag string, v, lo, hi time.Duration, zero string) error {
	if (zero != "" && v == 0) || (v >= lo && v <= hi) {
		return nil
	}
	if zero != "" {
		return fmt.Errorf("--%s %v: must be 0 (%s) or from %v to %v", flag, v, zero, lo, hi)
	}
	return fmt.Errorf("--%s %v: must be from %v to %v", flag, v, lo, hi)
}

// positiveUpTo checks 0 < v <= hi (NaN and infinities are out).
func positiveUpTo(flag string, v, hi float64) error {
	if v > 0 && v <= hi {
		return nil
	}
	return fmt.Errorf("--%s %v: must be more than 0 and at most %v", flag, v, hi)
}

// share checks 0 <= v <= 1 (NaN is out).
func share(flag string, v float64) error {
	if v >= 0 && v <= 1 {
		return nil
	}
	return fmt.Errorf("--%s %v: must be from 0 to 1", flag, v)
}

// Bounds of the flags.
const (
	minWatch, maxWatch = time.Second, time.Hour
	maxLimit           = 10_000_000
	maxPreview         = 4096
	maxReplayRate      = 10_000.0
	maxPublishCount    = 1_000_000
	minPublishTimeout  = 100 * time.Millisecond
	maxPublishTimeout  = 10 * time.Minute
	maxEmulatorLatency = 10 * time.Minute
	minHTTPStatus      = 100
	maxHTTPStatus      = 599
	maxPort            = math.MaxUint16
)
