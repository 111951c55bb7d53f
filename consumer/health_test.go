package consumer

import (
	"errors"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// The route health state machine, without NATS: the clock is passed in.
// Settings are the defaults (ratio 0.5 over at least 10 calls, first probe
// after 1s, doubling up to 3s).

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func newTestHealth() *health { return newHealth(BreakerSettings{}, 64) }

// fresh and retry are calls of a message that had not failed before, and
// of one that had.
func fresh(class agentapi.Class) callResult { return callResult{class: class, fresh: true} }
func retry(class agentapi.Class) callResult { return callResult{class: class} }
func probe(c callResult) callResult         { c.probe = true; return c }

// calls records n calls, all admitted as ordinary calls.
func calls(t *testing.T, h *health, n int, c callResult, now time.Time) (tripped int) {
	t.Helper()
	for range n {
		if h.record(c, now) == becameStopped {
			tripped++
		}
	}
	return tripped
}

func TestHealthOutageNeedsAShareOfAtLeastMinCallsOfFreshMessages(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	if calls(t, h, 9, fresh(agentapi.ClassServerError), at(0)) != 0 {
		t.Fatal("tripped on 9 calls, under min_calls 10")
	}
	if h.record(fresh(agentapi.ClassServerError), at(0)) != becameStopped {
		t.Fatal("10 failures of 10 fresh messages did not trip")
	}
	if st := h.state(at(0)); st.Condition != conditionOutage || st.NextProbe != at(time.Second) {
		t.Errorf("state %+v, want outage with a probe in 1s", st)
	}

	h = newTestHealth()
	calls(t, h, 12, fresh(agentapi.ClassAccepted), at(0))
	for range 5 { // interleaved: no run of failures as long as min_calls
		calls(t, h, 2, fresh(agentapi.ClassTimeout), at(0))
		calls(t, h, 1, retry(agentapi.ClassAccepted), at(0))
	}
	if calls(t, h, 6, fresh(agentapi.ClassTimeout), at(0)) != 0 {
		t.Error("tripped at 16 failures of 33 calls, under half")
	}
	if calls(t, h, 1, fresh(agentapi.ClassNetwork), at(0)) != 1 {
		t.Error("17 failures of 34 calls did not trip")
	}
}

// A few bad events fail as often as they are retried: their retries are
// no evidence of an outage, however many there are, and the route stays
// up (issue 17, finding 1).
func TestHealthRetriesOfFailingMessagesNeverStopTheRoute(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	calls(t, h, 9, fresh(agentapi.ClassServerError), at(0)) // nine bad events, once each
	for i := range 200 {
		now := at(time.Duration(i) * 100 * time.Millisecond)
		if calls(t, h, 1, retry(agentapi.ClassServerError), now)+calls(t, h, 1, retry(agentapi.ClassTimeout), now) != 0 {
			t.Fatalf("retries of failing messages tripped the route after %d rounds", i)
		}
	}
	if h.state(at(time.Minute)).Condition != conditionNone {
		t.Error("the route stopped")
	}
}

// On a quiet route the window is full of earlier successes: min_calls
// failures of fresh messages in a row declare the outage all the same.
func TestHealthOutageAfterManySuccessesTripsOnARunOfFreshFailures(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	calls(t, h, 200, fresh(agentapi.ClassAccepted), at(0))
	if calls(t, h, 9, fresh(agentapi.ClassServerError), at(0)) != 0 {
		t.Fatal("tripped on 9 failures in a row, under min_calls 10")
	}
	if calls(t, h, 1, fresh(agentapi.ClassServerError), at(0)) != 1 {
		t.Error("10 failures in a row after 200 successes did not trip")
	}
}

func TestHealthAnswersOfTheAPIAreNoOutage(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	for _, c := range []agentapi.Class{agentapi.ClassForbidden, agentapi.ClassNotFound, agentapi.ClassBadRequest, agentapi.ClassClientError, agentapi.ClassCanceled} {
		if calls(t, h, 50, fresh(c), at(0)) != 0 {
			t.Errorf("%s tripped the route: it is the API answering (or our shutdown)", c)
		}
	}
}

func TestHealthTokenAndAgentConditionsTripAtOnce(t *testing.T) {
	t.Parallel()
	for class, want := range map[agentapi.Class]condition{
		agentapi.ClassUnauthorized: conditionUnauthorized,
		agentapi.ClassConflict:     conditionNotRunnable,
	} {
		for _, c := range []callResult{fresh(class), retry(class)} {
			h := newTestHealth()
			if h.record(c, at(0)) != becameStopped {
				t.Errorf("%s (fresh %v) did not trip", class, c.fresh)
			}
			if got := h.state(at(0)).Condition; got != want {
				t.Errorf("%s: condition %q, want %q", class, got, want)
			}
		}
	}
}

// The condition keeps its evidence: the call that tripped it, then each
// failed probe; status shows it.
func TestHealthCauseIsTheLatestEvidence(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	h.record(callResult{class: agentapi.ClassConflict, status: 409, err: errors.New("agent is being published"), fresh: true}, at(0))
	if c := h.state(at(0)).Cause; c.Class != "conflict" || c.Status != 409 || c.Error != "agent is being published" {
		t.Errorf("cause after the trip %+v", c)
	}
	h.admit(at(time.Second), true)
	h.record(probe(callResult{class: agentapi.ClassConflict, status: 409, err: errors.New("agent is paused")}), at(time.Second))
	if c := h.state(at(time.Second)).Cause; c.Error != "agent is paused" {
		t.Errorf("cause after a failed probe %+v", c)
	}
	h.admit(at(3*time.Second), true)
	h.record(probe(fresh(agentapi.ClassAccepted)), at(3*time.Second))
	if c := h.state(at(3 * time.Second)).Cause; c != (StopCause{}) {
		t.Errorf("cause after resuming %+v, want none", c)
	}
}

func TestHealthGateAdmitsOneProbeWhenDue(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	h.record(fresh(agentapi.ClassConflict), at(0))
	if got := h.admit(at(500*time.Millisecond), true); got != admitGated {
		t.Fatalf("admit before the probe is due = %v, want Gated", got)
	}
	if got := h.admit(at(time.Second), true); got != admitProbe {
		t.Fatalf("admit when due = %v, want Probe", got)
	}
	if got := h.admit(at(time.Second), true); got != admitGated {
		t.Errorf("a second call while the probe is in flight = %v, want Gated", got)
	}
	if st := h.state(at(time.Second)); !st.Probing || st.RetryIn != time.Second {
		t.Errorf("while probing: %+v, want probing and hand-backs waiting one interval", st)
	}
}

func TestHealthFailedProbesDoubleTheIntervalUpToTheCap(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	calls(t, h, 10, fresh(agentapi.ClassServerError), at(0))
	now := at(0)
	var intervals []time.Duration
	for range 5 {
		now = h.state(now).NextProbe
		if h.admit(now, true) != admitProbe {
			t.Fatalf("no probe at %v", now)
		}
		if tr := h.record(probe(fresh(agentapi.ClassTimeout)), now); tr != probeFailed {
			t.Fatalf("failed probe gave %v", tr)
		}
		intervals = append(intervals, h.state(now).NextProbe.Sub(now))
	}
	want := []time.Duration{2 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second}
	for i := range want {
		if intervals[i] != want[i] {
			t.Errorf("intervals after failed probes = %v, want %v", intervals, want)
			break
		}
	}
}

func TestHealthFirstSuccessfulProbeResumesAtFullSpeed(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	calls(t, h, 10, fresh(agentapi.ClassServerError), at(0))
	h.admit(at(time.Second), true)
	if tr := h.record(probe(fresh(agentapi.ClassAccepted)), at(time.Second)); tr != resumed {
		t.Fatalf("successful probe gave %v, want Resumed", tr)
	}
	st := h.state(at(time.Second))
	if st.Condition != conditionNone || st.Limit != 64 || st.Was != conditionOutage || st.WasSince != t0 {
		t.Errorf("after resume: %+v", st)
	}
	if h.admit(at(time.Second), true) != admitCall {
		t.Error("resumed route does not admit calls")
	}
	// A probe that meets a 4xx of the message's own also shows the API is
	// back.
	h.record(fresh(agentapi.ClassUnauthorized), at(2*time.Second))
	h.admit(at(3*time.Second), true)
	if tr := h.record(probe(fresh(agentapi.ClassNotFound)), at(3*time.Second)); tr != resumed {
		t.Errorf("a 404 probe after a 401 condition gave %v, want Resumed", tr)
	}
}

// A flapping API: each new condition starts probing short again, and the
// outage detector forgets the failures of the last episode.
func TestHealthFlappingAPIStartsEachEpisodeAfresh(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	now := at(0)
	for episode := range 3 {
		if calls(t, h, 10, fresh(agentapi.ClassServerError), now) != 1 {
			t.Fatalf("episode %d: did not trip", episode)
		}
		if st := h.state(now); st.NextProbe.Sub(now) != time.Second {
			t.Errorf("episode %d: first probe in %v, want 1s", episode, st.NextProbe.Sub(now))
		}
		now = now.Add(time.Second)
		h.admit(now, true)
		h.record(probe(fresh(agentapi.ClassTimeout)), now) // one failed probe
		now = now.Add(2 * time.Second)
		h.admit(now, true)
		if h.record(probe(fresh(agentapi.ClassAccepted)), now) != resumed {
			t.Fatalf("episode %d: did not resume", episode)
		}
		if calls(t, h, 9, fresh(agentapi.ClassServerError), now) != 0 {
			t.Fatalf("episode %d: tripped on fewer than min_calls after resuming", episode)
		}
		calls(t, h, 9, fresh(agentapi.ClassAccepted), now)
		now = now.Add(time.Second)
	}
}

// Calls that were in flight when the route stopped do not change it: only
// probes end a condition.
func TestHealthCallsInFlightAtTheTripDoNotResume(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	h.record(fresh(agentapi.ClassConflict), at(0))
	if tr := h.record(fresh(agentapi.ClassAccepted), at(10*time.Millisecond)); tr != noChange {
		t.Errorf("an in-flight call's success gave %v", tr)
	}
	if h.state(at(10*time.Millisecond)).Condition != conditionNotRunnable {
		t.Error("condition ended without a probe")
	}
}

// An outage during which the only messages held are ones that failed
// before: their probes keep the route stopped (nothing says the API is
// back), and the first success of any message resumes it.
func TestHealthOutageProbedOnlyByMessagesThatFailedBefore(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	calls(t, h, 10, fresh(agentapi.ClassServerError), at(0))
	now := at(0)
	for range 4 {
		now = h.state(now).NextProbe
		h.admit(now, true)
		if tr := h.record(probe(retry(agentapi.ClassServerError)), now); tr != probeFailed {
			t.Fatalf("a failed probe of a message that failed before gave %v", tr)
		}
	}
	now = h.state(now).NextProbe
	h.admit(now, true)
	if h.record(probe(retry(agentapi.ClassAccepted)), now) != resumed {
		t.Error("a successful probe did not resume the route")
	}
}

// A probe of a message that failed before proves nothing new of an
// outage: a fresh message may probe at once after it, and even beside it
// while it is in flight; only a fresh message's failed probe holds the
// next one off for the interval.
func TestHealthOnlyFreshProbesProveAnOutage(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	calls(t, h, 10, fresh(agentapi.ClassServerError), at(0))
	if h.admit(at(time.Second), false) != admitProbe {
		t.Fatal("no probe when due")
	}
	if h.admit(at(time.Second), false) != admitGated {
		t.Error("a second probe of a failed message beside the first")
	}
	if h.admit(at(1100*time.Millisecond), true) != admitProbe {
		t.Error("a fresh message may not probe beside a failed one's probe")
	}
	if h.admit(at(1200*time.Millisecond), true) != admitGated {
		t.Error("two fresh probes at once")
	}
	h.record(probe(retry(agentapi.ClassServerError)), at(1500*time.Millisecond))
	if st := h.state(at(1500 * time.Millisecond)); !st.Probing || st.AnyMayProbe {
		t.Errorf("while the fresh probe is in flight: %+v", st)
	}
	h.record(probe(fresh(agentapi.ClassServerError)), at(1600*time.Millisecond))
	st := h.state(at(1600 * time.Millisecond))
	if st.FreshMayProbe || st.AnyMayProbe {
		t.Errorf("after a fresh probe failed: %+v; want no probe before the next is due", st)
	}
	now := st.NextProbe
	h.admit(now, false)
	h.record(probe(retry(agentapi.ClassServerError)), now)
	if st := h.state(now); !st.FreshMayProbe || st.AnyMayProbe {
		t.Errorf("after a failed message's probe failed: %+v, want a fresh message to probe at once, no other", st)
	}
}

// AIMD reacts to the share of distinct (fresh) messages answered 429: a
// limit most calls meet halves the concurrency, a limit on one message
// retried over and over never does.
func TestHealthRateLimitIsAIMDOnTheShareOfFreshMessages(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	limited := func(ra time.Duration) callResult {
		return callResult{class: agentapi.ClassRateLimited, fresh: true, retryAfter: ra}
	}
	calls(t, h, int(DefaultMinCalls)-1, limited(2*time.Second), at(0))
	if got := h.state(at(0)).Limit; got != 64 {
		t.Fatalf("limit after %d 429s = %d, want 64: too few fresh calls of late to tell the route's limit from a message's", DefaultMinCalls-1, got)
	}
	h.record(limited(2*time.Second), at(0))
	if got := h.state(at(0)).Limit; got != 32 {
		t.Fatalf("limit after min_calls fresh 429s = %d, want 32", got)
	}
	h.record(limited(0), at(10*time.Millisecond))
	if got := h.state(at(0)).Limit; got != 32 {
		t.Errorf("a second 429 of the same burst cut again: %d", got)
	}
	h.record(limited(0), at(200*time.Millisecond))
	if got := h.state(at(0)).Limit; got != 16 {
		t.Errorf("limit after a later 429 = %d, want 16", got)
	}
	calls(t, h, 100, fresh(agentapi.ClassAccepted), at(time.Second))
	if got := h.state(at(0)).Limit; got != 16 {
		t.Errorf("limit grew to %d within Retry-After", got)
	}
	calls(t, h, 18, fresh(agentapi.ClassAccepted), at(3*time.Second))
	if got := h.state(at(0)).Limit; got != 17 {
		t.Errorf("limit after a round of successes = %d, want 17 (about one more per round)", got)
	}
	if h.state(at(3*time.Second)).Condition != conditionNone {
		t.Error("429s with room to slow down stopped the route")
	}

	// One message among many that pass: its 429s, first or retried, cut
	// nothing and are its own.
	h = newTestHealth()
	for i := range 20 {
		now := at(time.Duration(i) * 250 * time.Millisecond)
		calls(t, h, 49, fresh(agentapi.ClassAccepted), now)
		h.record(limited(time.Second), now)
		calls(t, h, 5, retry(agentapi.ClassRateLimited), now)
		if st := h.state(now); st.Limit != 64 || st.Throttled {
			t.Fatalf("round %d: limit %d, throttled %v: one message's 429s slowed the route", i, st.Limit, st.Throttled)
		}
	}
	// One message's first 429 among exactly min_calls fresh calls (a
	// slow second: 10 %) is still its own: a message is fresh only once.
	h = newTestHealth()
	calls(t, h, int(DefaultMinCalls)-1, fresh(agentapi.ClassAccepted), at(0))
	h.record(limited(time.Second), at(0))
	if st := h.state(at(0)); st.Limit != 64 || st.Throttled {
		t.Errorf("one message's 429 among %d fresh calls: limit %d, throttled %v", DefaultMinCalls, st.Limit, st.Throttled)
	}
	// Most fresh calls limited: the route's.
	calls(t, h, 60, limited(0), at(10*time.Second))
	if st := h.state(at(10 * time.Second)); st.Limit >= 64 || !st.Throttled {
		t.Errorf("a limit most calls meet: limit %d, throttled %v", st.Limit, st.Throttled)
	}
}

func TestHealthRateLimitAtConcurrencyOneStopsTheRoute(t *testing.T) {
	t.Parallel()
	h := newHealth(BreakerSettings{}, 1)
	n := 0
	for h.record(callResult{class: agentapi.ClassRateLimited, fresh: true, retryAfter: 3 * time.Second}, at(0)) != becameStopped {
		if n++; n > 100 {
			t.Fatal("429 on every call at concurrency one never stopped the route")
		}
	}
	if n+1 != rateLimitGateStreak {
		t.Errorf("stopped after %d 429s, want %d", n+1, rateLimitGateStreak)
	}
	st := h.state(at(0))
	if st.Condition != conditionRateLimited {
		t.Fatalf("state %+v, want rate_limited", st)
	}
	if wait := st.NextProbe.Sub(at(0)); wait != 3*time.Second {
		t.Errorf("first probe in %v, want the Retry-After 3s", wait)
	}
}

// At a concurrency of one, a single message answered 429 for ever (a
// limit on its conversation) never stops the route: only fresh messages'
// 429s in a row do (issue 17, finding 4).
func TestHealthOneMessagesRateLimitNeverStopsTheRoute(t *testing.T) {
	t.Parallel()
	h := newHealth(BreakerSettings{}, 1)
	h.record(callResult{class: agentapi.ClassRateLimited, fresh: true}, at(0))
	for i := range 100 {
		if h.record(retry(agentapi.ClassRateLimited), at(time.Duration(i)*time.Second)) == becameStopped {
			t.Fatalf("the retries of one message stopped the route after %d", i)
		}
	}
}

func TestHealthDisabledAdmitsEverything(t *testing.T) {
	t.Parallel()
	h := newHealth(BreakerSettings{Disabled: true}, 8)
	calls(t, h, 100, fresh(agentapi.ClassServerError), at(0))
	h.record(fresh(agentapi.ClassUnauthorized), at(0))
	if h.admit(at(0), true) != admitCall || h.state(at(0)).Condition != conditionNone || h.state(at(0)).Limit != 8 {
		t.Errorf("disabled health gated: %+v", h.state(at(0)))
	}
}

// An operator's pause stops everything, probes included (issue 17,
// finding 7); when it ends, a stopped route probes at once.
func TestHealthOperatorPauseAdmitsNothingNotEvenProbes(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	h.operatorPause(at(time.Hour), at(0))
	if h.admit(at(time.Second), true) != admitGated {
		t.Error("a healthy route admitted a call while paused by an operator")
	}
	h.record(fresh(agentapi.ClassConflict), at(0))
	for _, d := range []time.Duration{time.Second, 10 * time.Second, 59 * time.Minute} {
		if h.admit(at(d), true) != admitGated {
			t.Fatalf("a probe at %v while paused by an operator", d)
		}
	}
	h.operatorPause(time.Time{}, at(time.Hour))
	if st := h.state(at(time.Hour)); !st.OperatorPause.IsZero() || st.NextProbe != at(time.Hour) {
		t.Errorf("after the pause: %+v, want a probe at once", st)
	}
	if h.admit(at(time.Hour), true) != admitProbe {
		t.Error("no probe once the operator's pause ended")
	}
}

// Route health marks its pauses by their sub-second part, which also
// names the condition, so that every replica can stop for the same reason.
func TestAutoPauseMarkNamesTheCondition(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 1, 0, 0, 0, 999_000_000, time.UTC)
	for _, c := range conditions()[1:] {
		until := autoPauseUntil(at, c)
		if !isAutoPause(until) || !until.After(at) || pauseCondition(until) != c {
			t.Errorf("%s: autoPauseUntil = %v, auto %v, condition %q", c, until, isAutoPause(until), pauseCondition(until))
		}
	}
	if isAutoPause(time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC)) {
		t.Error("an operator's whole-second pause taken for agentrelay's")
	}
	legacy := time.Date(2026, 1, 1, 0, 30, 0, 424_242_424, time.UTC) // every earlier version's mark (routestatus)
	if !isAutoPause(legacy) || pauseCondition(legacy) != conditionOutage {
		t.Error("an earlier version's pause is not read as route health's outage")
	}
}

// When a share of the fresh calls time out, the API is slow, not the
// message bad: a timeout then does not count towards MaxTimeouts.
func TestHealthTellsASlowAPIFromAHangingMessage(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	for range 99 {
		h.record(fresh(agentapi.ClassAccepted), at(0))
	}
	h.record(fresh(agentapi.ClassTimeout), at(0))
	if h.state(at(0)).SlowAPI {
		t.Error("one timeout in a hundred calls taken for a slow API")
	}
	for range 10 {
		h.record(fresh(agentapi.ClassTimeout), at(time.Second))
	}
	if !h.state(at(time.Second)).SlowAPI {
		t.Error("a tenth of the calls timing out not taken for a slow API")
	}
}

// A quiet route's failures are spread too thin for the detector's window:
// on their own they never stop it, and each message spends its own budget.
// While another route of the replica is stopped by an outage (every route
// calls one API), a run of corroborateCalls fresh failures with nothing
// accepted between them stops it too; a success breaks the run, and a
// route without such a run (a normal share of failures) runs on.
func TestHealthAQuietRouteStopsForAnOutageAnotherRouteProves(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		elsewhere bool
		pattern   []agentapi.Class
		stops     bool
	}{
		{"alone", false, []agentapi.Class{agentapi.ClassServerError, agentapi.ClassServerError, agentapi.ClassServerError, agentapi.ClassServerError}, false},
		{"corroborated", true, []agentapi.Class{agentapi.ClassServerError, agentapi.ClassTimeout, agentapi.ClassNetwork}, true},
		{"a success between", true, []agentapi.Class{agentapi.ClassServerError, agentapi.ClassServerError, agentapi.ClassAccepted, agentapi.ClassServerError, agentapi.ClassServerError}, false},
		{"answers are not failures", true, []agentapi.Class{agentapi.ClassForbidden, agentapi.ClassNotFound, agentapi.ClassServerError, agentapi.ClassServerError}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHealth()
			h.outageElsewhere = func() bool { return tc.elsewhere }
			stopped := false
			for i, class := range tc.pattern {
				// A call every 4 s: the detector's 5 s window never
				// holds min_calls of them.
				stopped = stopped || h.record(fresh(class), at(time.Duration(i)*4*time.Second)) == becameStopped
			}
			if st := h.state(at(time.Minute)); stopped != tc.stops || (tc.stops && st.Condition != conditionOutage) {
				t.Errorf("stopped %v (condition %v), want %v", stopped, st.Condition, tc.stops)
			}
			if h.outage.Load() != tc.stops {
				t.Errorf("the outage mirror says %v", h.outage.Load())
			}
			// Retries of messages that failed before are no evidence.
			h = newTestHealth()
			h.outageElsewhere = func() bool { return true }
			if calls(t, h, 10, retry(agentapi.ClassServerError), at(0)) != 0 {
				t.Error("a message's retries stopped the route")
			}
		})
	}
	h := newTestHealth()
	h.outageElsewhere = func() bool { return true }
	calls(t, h, corroborateCalls, fresh(agentapi.ClassServerError), at(0))
	h.resume()
	if h.outage.Load() {
		t.Error("the outage mirror outlived the outage")
	}
	if calls(t, h, corroborateCalls-1, fresh(agentapi.ClassServerError), at(time.Second)) != 0 {
		t.Error("the run before the resume still counted")
	}
}
