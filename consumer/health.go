package consumer

import (
	"errors"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/agentrelay/agentrelay/agentapi"
)

// Route health tells route-wide conditions (the API is down, the token is
// refused, the agent is not runnable, the agent is rate limited) from
// failures of one message. While a route-wide condition holds, the route
// takes no new deliveries; it probes with one real event at a time, on an
// interval that starts short and grows while the condition lasts, and the
// first probe that gets through resumes the route at full speed. Messages
// in hand meanwhile are handed back to wait for the next probe: an outage
// costs a message a bounded number of delivery attempts however long it
// lasts, and never a dead letter.
//
// The state machine here is pure apart from gobreaker's clock: the caller
// passes now, and the runner turns its answers into pulls, hand-backs and
// consumer pauses.

// Condition is a route-wide reason to stop calling the API.
type Condition string

// Conditions. The empty Condition is a healthy route.
const (
	ConditionNone         Condition = ""
	ConditionOutage       Condition = "outage"       // 5xx, timeouts or network errors on a share of recent calls
	ConditionUnauthorized Condition = "unauthorized" // 401: the token is refused
	ConditionNotRunnable  Condition = "not_runnable" // 409: the agent or channel is not runnable
	ConditionRateLimited  Condition = "rate_limited" // 429 on every call even at a concurrency of one
)

const (
	conditionHealthyLabel = "healthy" // how ConditionNone is shown in logs and metrics
	rateLimitGateStreak   = 5         // 429s in a row at concurrency one that gate the route
	minCutSpacing         = 100 * time.Millisecond
)

// String names the condition for logs and metrics.
func (c Condition) String() string {
	if c == ConditionNone {
		return conditionHealthyLabel
	}
	return string(c)
}

// explains reports whether an outcome of class is what condition c makes
// every call end in: while c holds, such an outcome is the route's, not the
// message's.
func (c Condition) explains(class agentapi.Class) bool {
	switch c {
	case ConditionOutage:
		return class.Transient()
	case ConditionUnauthorized:
		return class == agentapi.ClassUnauthorized
	case ConditionNotRunnable:
		return class == agentapi.ClassConflict
	case ConditionRateLimited:
		return class == agentapi.ClassRateLimited
	}
	return false
}

func conditionLabels() []string {
	cs := Conditions()
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// Conditions lists every condition, healthy first, for metrics that export
// one series per state.
func Conditions() []Condition {
	return []Condition{ConditionNone, ConditionOutage, ConditionUnauthorized, ConditionNotRunnable, ConditionRateLimited}
}

// BreakerSettings configure how a route detects an API outage and how it
// probes while a route-wide condition holds. The zero value of each field
// means its default, so BreakerSettings{} is sensible.
type BreakerSettings struct {
	// FailureRatio is the share of transient failures (5xx, timeouts,
	// network errors) among the route's recent calls that declares an
	// outage. Default 0.5.
	FailureRatio float64
	// MinCalls is how many calls the recent window must hold before the
	// ratio counts, so that two failures out of three calls do not stop a
	// route. MinCalls failures in a row also declare an outage, whatever
	// came before them in the window: on a quiet route the ratio of a
	// window full of earlier successes would take too long to tip, and a
	// message's own retries would run out first. Default 10.
	MinCalls uint32
	// Window is how far back "recent" reaches (a rolling window of ten
	// buckets). Default 5s.
	Window time.Duration
	// ProbeInterval is the wait before the first probe after a route-wide
	// condition is detected. Default 1s.
	ProbeInterval time.Duration
	// MaxProbeInterval caps the probe interval, which doubles after every
	// failed probe. It bounds how long a route stays stopped after the API
	// has recovered. Default 3s.
	MaxProbeInterval time.Duration
	// Disabled turns route health off: no condition is ever detected, every
	// failure is handled per message, and concurrency stays fixed.
	Disabled bool
}

// Breaker defaults. They are chosen for recovery: a route stops within
// about a second of an outage (ten calls, half failing), probes after one
// second, and never waits more than three between probes, so the backlog
// starts to drain within seconds of the API's recovery.
const (
	DefaultFailureRatio     = 0.5
	DefaultMinCalls         = 10
	DefaultBreakerWindow    = 5 * time.Second
	DefaultProbeInterval    = time.Second
	DefaultMaxProbeInterval = 3 * time.Second
)

// WithDefaults returns s with zero fields set to their defaults. Check
// refuses a MaxProbeInterval below the ProbeInterval, given or defaulted.
func (s BreakerSettings) WithDefaults() BreakerSettings {
	if s.FailureRatio <= 0 || s.FailureRatio > 1 {
		s.FailureRatio = DefaultFailureRatio
	}
	if s.MinCalls == 0 {
		s.MinCalls = DefaultMinCalls
	}
	if s.Window <= 0 {
		s.Window = DefaultBreakerWindow
	}
	if s.ProbeInterval <= 0 {
		s.ProbeInterval = DefaultProbeInterval
	}
	if s.MaxProbeInterval <= 0 {
		s.MaxProbeInterval = DefaultMaxProbeInterval
	}
	return s
}

// Admission is what the health model says about a call about to be made.
type Admission uint8

// Admissions.
const (
	Admit Admission = iota + 1 // healthy: call
	Probe                      // gated, and this call is the probe: call, then report with probe=true
	Gated                      // gated: do not call; hand the message back until the next probe
)

// Transition is what a recorded outcome changed.
type Transition uint8

// Transitions.
const (
	NoChange    Transition = iota
	Tripped                // a route-wide condition began
	ProbeFailed            // a probe met the condition again; the interval grew
	Resumed                // a probe got through: the route is healthy
)

func (t Transition) String() string {
	switch t {
	case Tripped:
		return "tripped"
	case ProbeFailed:
		return "probe_failed"
	case Resumed:
		return "resumed"
	}
	return "none"
}

// HealthState is a snapshot of a route's health, for the runner, metrics
// and status output.
type HealthState struct {
	Condition Condition
	Since     time.Time     // when the condition began
	NextProbe time.Time     // when the next probe may go (zero when healthy)
	Interval  time.Duration // the current probe interval
	Probing   bool          // a probe is in flight
	Limit     int           // concurrency allowed now (AIMD under 429)
	RetryIn   time.Duration // when gated: how long a handed-back message should wait
	Was       Condition     // the last condition that ended
	WasSince  time.Time     // when it began
}

// health is one route's health model on one replica. It is safe for
// concurrent use.
type health struct {
	s        BreakerSettings
	maxLimit int
	// outageElsewhere reports whether another route of this replica is in
	// an outage: the API is one service, so a transient failure then is
	// the outage reaching this route too, not this message's own.
	outageElsewhere func() bool

	mu        sync.Mutex
	cond      Condition
	since     time.Time
	interval  time.Duration
	nextProbe time.Time
	probing   bool
	cb        *gobreaker.TwoStepCircuitBreaker[struct{}]
	tripped   bool // set by cb's OnStateChange, read under mu
	was       Condition
	wasSince  time.Time

	// AIMD concurrency under 429.
	limit      float64
	lastCut    time.Time
	holdGrowth time.Time // no additive increase before this (Retry-After)
	streak429  int
}

func newHealth(s BreakerSettings, maxLimit int) *health {
	h := &health{s: s.WithDefaults(), maxLimit: max(maxLimit, 1)}
	h.limit = float64(h.maxLimit)
	h.cb = h.newDetector()
	return h
}

// errTransient is what the outage detector is told of a transient failure.
var errTransient = errors.New("transient failure")

// newDetector returns a fresh outage detector: a gobreaker that trips on the
// failure ratio over a rolling window with a minimum number of calls. It is
// only consulted while the route is healthy and replaced when the route
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

// admit decides whether a call may be made now.
func (h *health) admit(now time.Time) Admission {
	if h.s.Disabled {
		return Admit
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.cond == ConditionNone:
		return Admit
	case !h.probing && !now.Before(h.nextProbe):
		h.probing = true
		return Probe
	}
	return Gated
}

// probeNow moves the next probe to now: another replica resumed the route,
// or the consumer's pause ended, so the condition may be over.
func (h *health) probeNow(now time.Time) {
	h.mu.Lock()
	if h.cond != ConditionNone && now.Before(h.nextProbe) {
		h.nextProbe = now
	}
	h.mu.Unlock()
}

// cancelProbe returns an admitted probe that was not made (shutdown).
func (h *health) cancelProbe() {
	h.mu.Lock()
	h.probing = false
	h.mu.Unlock()
}

// condition maps an outcome to the route-wide condition it signals on its
// own, if any. Outages are not in it: one 5xx says nothing about the route;
// the failure ratio does.
func condition(c agentapi.Class) Condition {
	switch c {
	case agentapi.ClassUnauthorized:
		return ConditionUnauthorized
	case agentapi.ClassConflict:
		return ConditionNotRunnable
	}
	return ConditionNone
}

// record takes the outcome of a call made after admit said Admit (probe
// false) or Probe (probe true). retryAfter is the API's Retry-After, if
// any.
func (h *health) record(class agentapi.Class, probe bool, retryAfter time.Duration, now time.Time) Transition {
	if h.s.Disabled || class == agentapi.ClassCanceled {
		if probe {
			h.cancelProbe()
		}
		return NoChange
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.adapt(class, retryAfter, now)
	if probe {
		h.probing = false
		if h.cond == ConditionNone {
			return NoChange
		}
		if h.cond.explains(class) {
			h.interval = min(2*h.interval, h.s.MaxProbeInterval)
			h.nextProbe = now.Add(max(h.interval, min(retryAfter, h.s.MaxProbeInterval)))
			return ProbeFailed
		}
		h.resume()
		return Resumed
	}
	if h.cond != ConditionNone {
		// A call that was in flight when the route was gated: the
		// condition is already known, and only probes end it.
		return NoChange
	}
	cond := condition(class)
	if cond == ConditionNone && class == agentapi.ClassRateLimited && h.streak429 >= rateLimitGateStreak {
		cond = ConditionRateLimited
	}
	if cond == ConditionNone && class.Transient() && h.outageElsewhere != nil && h.outageElsewhere() {
		cond = ConditionOutage
	}
	if cond == ConditionNone {
		if done, err := h.cb.Allow(); err == nil {
			var failure error
			if class.Transient() {
				failure = errTransient
			}
			done(failure)
		}
		if h.tripped {
			cond = ConditionOutage
		}
	}
	if cond == ConditionNone {
		return NoChange
	}
	h.cond, h.since, h.interval = cond, now, h.s.ProbeInterval
	h.nextProbe = now.Add(max(h.interval, min(retryAfter, h.s.MaxProbeInterval)))
	return Tripped
}

func (h *health) resume() {
	h.was, h.wasSince = h.cond, h.since
	h.cond, h.since, h.nextProbe, h.interval = ConditionNone, time.Time{}, time.Time{}, 0
	h.tripped = false
	h.cb = h.newDetector()
	h.streak429 = 0
	// A route that was rate limited comes back at half speed and grows;
	// any other comes back at full speed.
	if h.limit < 1 {
		h.limit = 1
	}
}

// adapt is the AIMD part: a 429 halves the concurrency (at most once per
// minCutSpacing, so one burst of 429s from calls already in flight counts
// once) and holds growth for its Retry-After; a success adds one call per
// round of calls.
func (h *health) adapt(class agentapi.Class, retryAfter time.Duration, now time.Time) {
	switch {
	case class == agentapi.ClassRateLimited:
		if h.limit <= 1 {
			h.streak429++
		}
		if now.Sub(h.lastCut) >= minCutSpacing {
			h.limit = max(1, h.limit/2)
			h.lastCut = now
		}
		h.holdGrowth = maxTime(h.holdGrowth, now.Add(min(retryAfter, h.s.MaxProbeInterval)))
	case class == agentapi.ClassAccepted:
		h.streak429 = 0
		if now.After(h.holdGrowth) && h.limit < float64(h.maxLimit) {
			h.limit = min(float64(h.maxLimit), h.limit+1/h.limit)
		}
	}
}

// state returns a snapshot.
func (h *health) state(now time.Time) HealthState {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := HealthState{
		Condition: h.cond, Since: h.since, NextProbe: h.nextProbe, Interval: h.interval,
		Probing: h.probing, Limit: int(h.limit), Was: h.was, WasSince: h.wasSince,
	}
	if h.s.Disabled {
		st.Limit = h.maxLimit
	}
	if h.cond != ConditionNone {
		// Until the next probe; while one is in flight, the next one
		// comes an interval after it at the earliest.
		st.RetryIn = h.nextProbe.Sub(now)
		if st.RetryIn <= 0 {
			st.RetryIn = h.interval
		}
	}
	return st
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
