package consumer

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/sony/gobreaker/v2"
)

// Route health tells route-wide conditions (the API is down, the token is
// refused, the agent is not runnable, the agent is rate limited) from
// failures of single messages, and acts only on the first.
//
// A route-wide condition must be shown by messages that have not failed
// before ("fresh" ones, see ledger): a message's retries never count
// towards an outage or a rate limit, so a few bad events cannot stop a
// route however often they fail. While a condition holds the route takes no
// new deliveries; it probes with one real event at a time, preferring a
// fresh one (see gate), on an interval that starts short and grows while
// the condition lasts, and the first probe that gets through resumes the
// route at full speed. An outage costs a message a bounded number of
// delivery attempts however long it lasts, and never a dead letter.
//
// The state machine here is pure apart from gobreaker's clock: the caller
// passes now, and the runner turns its answers into pulls, hand-backs and
// consumer pauses.

// callResult is what one call told route health.
type callResult struct {
	class      agentapi.Class
	status     int
	err        error
	retryAfter time.Duration
	// fresh: the message had not failed on this replica before this call.
	fresh bool
	// probe: the call was made after admit said Probe.
	probe bool
}

// healthState is a snapshot of a route's health, for the runner, metrics
// and status output.
type healthState struct {
	Condition condition
	Since     time.Time     // when the condition began
	NextProbe time.Time     // when the next probe may go (zero when healthy)
	Interval  time.Duration // the current probe interval
	Probing   bool          // a probe is in flight
	// AnyMayProbe: a probe is due and none is in flight: any message may
	// probe (a fresh one first; see gate). FreshMayProbe: a fresh message
	// may probe now, even beside a probe in flight or before the probe is
	// due, when that probe is a message's that failed before, or such a
	// message's probe was the last to fail: its failure proves nothing.
	AnyMayProbe, FreshMayProbe bool
	Limit                      int           // concurrency allowed now (AIMD under 429)
	RetryIn                    time.Duration // when stopped: how long a handed-back message should wait
	Cause                      StopCause     // the call that tripped the condition, or its last failed probe
	// Throttled: a share of the fresh calls of late were answered 429, so
	// a 429 now is the route's, not the message's.
	Throttled bool
	// SlowAPI: a share of the fresh calls of late timed out, so a timeout
	// now says little about the message: it counts towards its
	// MaxAttempts, not its MaxTimeouts.
	SlowAPI bool
	// OperatorPause is when an operator's pause of the consumer ends (zero
	// when there is none): no probes, no calls meanwhile.
	OperatorPause time.Time
	Was           condition // the last condition that ended
	WasSince      time.Time // when it began
}

// health is one route's health model on one replica. It is safe for
// concurrent use.
type health struct {
	s        BreakerSettings
	maxLimit int

	mu       sync.Mutex // guards every field below
	stop     stop       // the route-wide condition, while one holds
	paused   time.Time  // an operator's pause, until then
	detector *gobreaker.TwoStepCircuitBreaker[struct{}]
	tripped  bool // set by the detector's OnStateChange
	was      condition
	wasSince time.Time
	aimd     aimd
	timeouts shareWindow // fresh calls and those of them that timed out
	// freshRun counts the transient failures of fresh messages since the
	// last accepted call, however sparse: the detector's window forgets
	// them on a quiet route.
	freshRun int

	// outage mirrors stop.cond == conditionOutage for other routes to read
	// without this lock (see outageElsewhere).
	outage atomic.Bool
	// outageElsewhere reports whether another route of this replica is
	// stopped by an outage (nil: never). All routes call one API, so an
	// outage they prove corroborates this route's own failures: a quiet
	// route, whose few calls the detector's window never holds enough of,
	// stops after corroborateCalls fresh failures in a row instead of
	// spending its messages' budgets on the outage. It is set before the
	// route runs.
	outageElsewhere func() bool
}

// slowShare of the fresh calls of the last window timing out makes a
// timeout the API's slowness rather than the message's (see
// healthState.SlowAPI).
const slowShare = 0.05

// stop is a route-wide condition and its probing. It is part of health
// and guarded by health's lock; the zero value is a healthy route.
type stop struct {
	cond      condition
	since     time.Time
	interval  time.Duration
	nextProbe time.Time
	probes    int  // probes in flight: at most one, and one of a fresh message beside it
	fresh     bool // a fresh message's probe is in flight
	proven    bool // the condition's latest evidence is a fresh message's (or needs none)
	cause     StopCause
}

func newHealth(s BreakerSettings, maxLimit int) *health {
	h := &health{s: s.WithDefaults(), maxLimit: max(maxLimit, 1)}
	h.aimd = newAIMD(h.maxLimit, h.s)
	h.timeouts = newShareWindow(h.s.Window)
	h.detector = h.newDetector()
	return h
}

// admit decides whether a call of a message (fresh or not) may be made now.
func (h *health) admit(now time.Time, fresh bool) admission {
	if h.s.Disabled {
		return admitCall
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case now.Before(h.paused):
		return admitGated
	case h.stop.cond == conditionNone:
		return admitCall
	case fresh && h.freshMayProbeLocked(now), !fresh && h.anyMayProbeLocked(now):
		h.stop.probes++
		h.stop.fresh = h.stop.fresh || fresh
		return admitProbe
	}
	return admitGated
}

func (h *health) anyMayProbeLocked(now time.Time) bool {
	return h.stop.cond != conditionNone && !now.Before(h.paused) && h.stop.probes == 0 && !now.Before(h.stop.nextProbe)
}

func (h *health) freshMayProbeLocked(now time.Time) bool {
	return h.stop.cond != conditionNone && !now.Before(h.paused) && !h.stop.fresh && (!now.Before(h.stop.nextProbe) || !h.stop.proven)
}

// resumeSeen resumes a route stopped by a condition every replica shares
// (stopped since since) on evidence from elsewhere: other replicas' events
// are accepted. It is noChange when the route stopped again meanwhile.
func (h *health) resumeSeen(since time.Time) transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stop.cond.sharedByReplicas() || !h.stop.since.Equal(since) {
		return noChange
	}
	h.resume()
	return resumed
}

// probeNow moves the next probe to now: another replica resumed the route,
// or the consumer's pause ended, so the condition may be over.
func (h *health) probeNow(now time.Time) {
	h.mu.Lock()
	if h.stop.cond != conditionNone && now.Before(h.stop.nextProbe) {
		h.stop.nextProbe = now
	}
	h.mu.Unlock()
}

// cancelProbe returns an admitted probe that was not made.
func (h *health) cancelProbe(fresh bool) {
	h.mu.Lock()
	h.endProbeLocked(fresh)
	h.mu.Unlock()
}

func (h *health) endProbeLocked(fresh bool) {
	h.stop.probes = max(h.stop.probes-1, 0)
	if fresh {
		h.stop.fresh = false
	}
}

// operatorPause records an operator's pause of the consumer, until then
// (zero: none). While it holds nothing is admitted, probes included; when
// it ends a stopped route probes at once.
func (h *health) operatorPause(until, now time.Time) {
	h.mu.Lock()
	ended := !h.paused.IsZero() && until.IsZero()
	h.paused = until
	if ended && h.stop.cond != conditionNone {
		h.stop.nextProbe = now
	}
	h.mu.Unlock()
}

// adopt stops a healthy route for cond, found elsewhere: by another
// replica (its pause of the consumer says so), or by several of the
// route's agents. This replica probes like that one, and resumes with the
// first probe that gets through anywhere. cause is the evidence.
func (h *health) adopt(cond condition, cause StopCause, now time.Time) transition {
	if h.s.Disabled || cond == conditionNone {
		return noChange
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stop.cond != conditionNone {
		return noChange
	}
	h.stop.cond, h.stop.since, h.stop.interval, h.stop.proven = cond, now, h.s.ProbeInterval, true
	h.stop.cause = cause
	h.stop.nextProbe = now.Add(h.stop.interval)
	h.outage.Store(cond == conditionOutage)
	return becameStopped
}

// conditionOf maps an outcome to the route-wide condition it signals on its
// own, if any. Outages are not in it: one 5xx says nothing about the route;
// the failures of fresh messages do.
func conditionOf(c agentapi.Class) condition {
	switch c {
	case agentapi.ClassUnauthorized:
		return conditionUnauthorized
	case agentapi.ClassConflict:
		return conditionNotRunnable
	}
	return conditionNone
}

// record takes the outcome of a call made after admit said admitCall (probe
// false) or admitProbe (probe true).
func (h *health) record(c callResult, now time.Time) transition {
	if h.s.Disabled || c.class == agentapi.ClassCanceled {
		if c.probe {
			h.cancelProbe(c.fresh)
		}
		return noChange
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.aimd.record(c, now, h.s.MaxProbeInterval)
	if c.fresh {
		h.timeouts.add(now, c.class == agentapi.ClassTimeout)
	}
	if c.probe {
		return h.probed(c, now)
	}
	if h.stop.cond != conditionNone {
		// A call that was in flight when the route stopped: the
		// condition is already known, and only probes end it.
		return noChange
	}
	cond := conditionOf(c.class)
	if cond == conditionNone && h.aimd.stopsRoute() {
		cond = conditionRateLimited
	}
	if cond == conditionNone && (h.detects(c) || h.corroboratedLocked()) {
		cond = conditionOutage
	}
	if cond == conditionNone {
		return noChange
	}
	h.stop.cond, h.stop.since, h.stop.interval, h.stop.proven = cond, now, h.s.ProbeInterval, true
	h.stop.cause = causeOf(c)
	h.stop.nextProbe = now.Add(max(h.stop.interval, min(c.retryAfter, h.s.MaxProbeInterval)))
	h.outage.Store(cond == conditionOutage)
	return becameStopped
}

// probed takes a probe's outcome. A failed probe of a message that failed
// before proves nothing new of an outage or a rate limit: a fresh message
// may probe at once after it.
func (h *health) probed(c callResult, now time.Time) transition {
	h.endProbeLocked(c.fresh)
	if h.stop.cond == conditionNone {
		return noChange
	}
	if h.stop.cond.explains(c.class) {
		h.stop.proven = c.fresh || h.stop.cond.anyMessageShows()
		h.stop.interval = min(2*h.stop.interval, h.s.MaxProbeInterval)
		h.stop.nextProbe = now.Add(max(h.stop.interval, min(c.retryAfter, h.s.MaxProbeInterval)))
		h.stop.cause = causeOf(c)
		return probeFailed
	}
	h.resume()
	return resumed
}

func (h *health) resume() {
	h.was, h.wasSince = h.stop.cond, h.stop.since
	// A probe still in flight (a fresh one beside another) is accounted
	// for when it ends.
	h.stop = stop{probes: h.stop.probes, fresh: h.stop.fresh}
	h.outage.Store(false)
	h.freshRun = 0
	h.tripped = false
	h.detector = h.newDetector()
	h.aimd.resumed()
}

// state returns a snapshot.
func (h *health) state(now time.Time) healthState {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := healthState{
		Condition: h.stop.cond, Since: h.stop.since, NextProbe: h.stop.nextProbe, Interval: h.stop.interval,
		Probing: h.stop.probes > 0, AnyMayProbe: h.anyMayProbeLocked(now), FreshMayProbe: h.freshMayProbeLocked(now),
		Limit: h.aimd.current(), Cause: h.stop.cause, Was: h.was, WasSince: h.wasSince,
		Throttled: h.stop.cond == conditionRateLimited || h.aimd.widespread(now, h.s.MinCalls),
	}
	if calls, timedOut := h.timeouts.counts(now); calls >= int(h.s.MinCalls) && float64(timedOut) >= slowShare*float64(calls) {
		st.SlowAPI = true
	}
	if now.Before(h.paused) {
		st.OperatorPause = h.paused
	}
	if h.s.Disabled {
		st.Limit = h.maxLimit
	}
	if h.stop.cond != conditionNone {
		// Until the next probe; while one is in flight, the next one
		// comes an interval after it at the earliest.
		st.RetryIn = h.stop.nextProbe.Sub(now)
		if st.RetryIn <= 0 {
			st.RetryIn = h.stop.interval
		}
	}
	return st
}

// causeOf is the evidence a call gives of a condition.
func causeOf(c callResult) StopCause {
	sc := StopCause{Class: string(c.class), Status: c.status}
	if c.err != nil {
		sc.Error = deadletter.OneLine(c.err.Error(), maxCauseError)
	}
	return sc
}

// maxCauseError bounds the error text a StopCause keeps.
const maxCauseError = 512

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
