package consumer

import (
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/agentrelay/agentrelay/agentapi"
)

// This file is route health's outage detection: which calls are evidence
// of an outage, and when they are enough.

// corroborateCalls is the run of fresh failures, with nothing accepted
// between them, that stops a route for an outage another route of the
// replica already proves. A route with a normal share of failures never
// makes such a run; a route that calls a dead API makes it at once.
const corroborateCalls = 3

// errTransient is what the outage detector is told of a transient failure.
var errTransient = errors.New("transient failure")

// newDetector returns a fresh outage detector: a gobreaker that trips on the
// failure ratio over a rolling window with a minimum number of calls, or on
// a run of failures. It is told every success and the transient failures of
// fresh messages only, so a message's retries never tip it. It is only
// consulted while the route is healthy and replaced when the route
// resumes, so its own open and half-open states are never used: the health
// model does the gating and probing, with a growing interval gobreaker
// does not offer.
func (h *health) newDetector() *gobreaker.TwoStepCircuitBreaker[struct{}] {
	s := h.s
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Interval:     s.Window,
		BucketPeriod: max(s.Window/10, time.Millisecond),
		Timeout:      time.Hour,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= s.MinCalls ||
				c.Requests >= s.MinCalls && float64(c.TotalFailures) >= s.FailureRatio*float64(c.Requests)
		},
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				h.tripped = true // under h.mu: only record calls the detector
			}
		},
	})
}

// corroboratedLocked reports whether this route's run of fresh failures,
// short of what the detector needs, is an outage another route of the
// replica proves.
func (h *health) corroboratedLocked() bool {
	return h.freshRun >= min(corroborateCalls, int(h.s.MinCalls)) && h.outageElsewhere != nil && h.outageElsewhere()
}

// detects tells the outage detector of a call, as far as it is evidence,
// and reports whether it tripped.
func (h *health) detects(c callResult) bool {
	var failure error
	switch {
	case c.class == agentapi.ClassAccepted:
		h.freshRun = 0
	case c.class.Transient() && c.fresh:
		failure = errTransient
		h.freshRun++
	default:
		return false // a retry's failure, or an answer of the API
	}
	if done, err := h.detector.Allow(); err == nil {
		done(failure)
	}
	return h.tripped
}
