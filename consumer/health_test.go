package consumer

import (
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

// calls records n outcomes of class, all admitted as ordinary calls.
func calls(t *testing.T, h *health, n int, class agentapi.Class, now time.Time) (tripped int) {
	t.Helper()
	for range n {
		if h.record(class, false, 0, now) == Tripped {
			tripped++
		}
	}
	return tripped
}

func TestHealthOutageNeedsAShareOfAtLeastMinCalls(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	if calls(t, h, 9, agentapi.ClassServerError, at(0)) != 0 {
		t.Fatal("tripped on 9 calls, under min_calls 10")
	}
	if h.record(agentapi.ClassServerError, false, 0, at(0)) != Tripped {
		t.Fatal("10 failures of 10 calls did not trip")
	}
	if st := h.state(at(0)); st.Condition != ConditionOutage || st.NextProbe != at(time.Second) {
		t.Errorf("state %+v, want outage with a probe in 1s", st)
	}

	h = newTestHealth()
	calls(t, h, 12, agentapi.ClassAccepted, at(0))
	for range 5 { // interleaved: no run of failures as long as min_calls
		calls(t, h, 2, agentapi.ClassTimeout, at(0))
		calls(t, h, 1, agentapi.ClassAccepted, at(0))
	}
	if calls(t, h, 6, agentapi.ClassTimeout, at(0)) != 0 {
		t.Error("tripped at 16 failures of 33 calls, under half")
	}
	if calls(t, h, 1, agentapi.ClassNetwork, at(0)) != 1 {
		t.Error("17 failures of 34 calls did not trip")
	}
}

// On a quiet route the window is full of earlier successes: min_calls
// failures in a row declare the outage all the same, before any message's
// own retries run out.
func TestHealthOutageAfterManySuccessesTripsOnARunOfFailures(t *testing.T) {
	h := newTestHealth()
	calls(t, h, 200, agentapi.ClassAccepted, at(0))
	if calls(t, h, 9, agentapi.ClassServerError, at(0)) != 0 {
		t.Fatal("tripped on 9 failures in a row, under min_calls 10")
	}
	if calls(t, h, 1, agentapi.ClassServerError, at(0)) != 1 {
		t.Error("10 failures in a row after 200 successes did not trip")
	}
}

func TestHealthAnswersOfTheAPIAreNoOutage(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	for _, c := range []agentapi.Class{agentapi.ClassForbidden, agentapi.ClassNotFound, agentapi.ClassBadRequest, agentapi.ClassClientError, agentapi.ClassCanceled} {
		if calls(t, h, 50, c, at(0)) != 0 {
			t.Errorf("%s tripped the route: it is the API answering (or our shutdown)", c)
		}
	}
}

func TestHealthTokenAndAgentConditionsTripAtOnce(t *testing.T) {
	t.Parallel()
	for class, want := range map[agentapi.Class]Condition{
		agentapi.ClassUnauthorized: ConditionUnauthorized,
		agentapi.ClassConflict:     ConditionNotRunnable,
	} {
		h := newTestHealth()
		if h.record(class, false, 0, at(0)) != Tripped {
			t.Errorf("%s did not trip", class)
		}
		if got := h.state(at(0)).Condition; got != want {
			t.Errorf("%s: condition %q, want %q", class, got, want)
		}
	}
}

func TestHealthGateAdmitsOneProbeWhenDue(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	h.record(agentapi.ClassConflict, false, 0, at(0))
	if got := h.admit(at(500 * time.Millisecond)); got != Gated {
		t.Fatalf("admit before the probe is due = %v, want Gated", got)
	}
	if got := h.admit(at(time.Second)); got != Probe {
		t.Fatalf("admit when due = %v, want Probe", got)
	}
	if got := h.admit(at(time.Second)); got != Gated {
		t.Errorf("a second call while the probe is in flight = %v, want Gated", got)
	}
	if st := h.state(at(time.Second)); !st.Probing || st.RetryIn != time.Second {
		t.Errorf("while probing: %+v, want probing and hand-backs waiting one interval", st)
	}
}

func TestHealthFailedProbesDoubleTheIntervalUpToTheCap(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	calls(t, h, 10, agentapi.ClassServerError, at(0))
	now := at(0)
	var intervals []time.Duration
	for range 5 {
		now = h.state(now).NextProbe
		if h.admit(now) != Probe {
			t.Fatalf("no probe at %v", now)
		}
		if tr := h.record(agentapi.ClassTimeout, true, 0, now); tr != ProbeFailed {
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
	calls(t, h, 10, agentapi.ClassServerError, at(0))
	h.admit(at(time.Second))
	if tr := h.record(agentapi.ClassAccepted, true, 0, at(time.Second)); tr != Resumed {
		t.Fatalf("successful probe gave %v, want Resumed", tr)
	}
	st := h.state(at(time.Second))
	if st.Condition != ConditionNone || st.Limit != 64 || st.Was != ConditionOutage || st.WasSince != t0 {
		t.Errorf("after resume: %+v", st)
	}
	if h.admit(at(time.Second)) != Admit {
		t.Error("resumed route does not admit calls")
	}
	// A probe that meets a 4xx of the message's own also shows the API is
	// back.
	h.record(agentapi.ClassUnauthorized, false, 0, at(2*time.Second))
	h.admit(at(3 * time.Second))
	if tr := h.record(agentapi.ClassNotFound, true, 0, at(3*time.Second)); tr != Resumed {
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
		if calls(t, h, 10, agentapi.ClassServerError, now) != 1 {
			t.Fatalf("episode %d: did not trip", episode)
		}
		if st := h.state(now); st.NextProbe.Sub(now) != time.Second {
			t.Errorf("episode %d: first probe in %v, want 1s", episode, st.NextProbe.Sub(now))
		}
		now = now.Add(time.Second)
		h.admit(now)
		h.record(agentapi.ClassTimeout, true, 0, now) // one failed probe
		now = now.Add(2 * time.Second)
		h.admit(now)
		if h.record(agentapi.ClassAccepted, true, 0, now) != Resumed {
			t.Fatalf("episode %d: did not resume", episode)
		}
		if calls(t, h, 9, agentapi.ClassServerError, now) != 0 {
			t.Fatalf("episode %d: tripped on fewer than min_calls after resuming", episode)
		}
		calls(t, h, 9, agentapi.ClassAccepted, now)
		now = now.Add(time.Second)
	}
}

// Calls that were in flight when the route stopped do not change it: only
// probes end a condition.
func TestHealthCallsInFlightAtTheTripDoNotResume(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	h.record(agentapi.ClassConflict, false, 0, at(0))
	if tr := h.record(agentapi.ClassAccepted, false, 0, at(10*time.Millisecond)); tr != NoChange {
		t.Errorf("an in-flight call's success gave %v", tr)
	}
	if h.state(at(10*time.Millisecond)).Condition != ConditionNotRunnable {
		t.Error("condition ended without a probe")
	}
}

func TestHealthRateLimitIsAIMD(t *testing.T) {
	t.Parallel()
	h := newTestHealth()
	h.record(agentapi.ClassRateLimited, false, 2*time.Second, at(0))
	if got := h.state(at(0)).Limit; got != 32 {
		t.Fatalf("limit after a 429 = %d, want 32", got)
	}
	h.record(agentapi.ClassRateLimited, false, 0, at(10*time.Millisecond))
	if got := h.state(at(0)).Limit; got != 32 {
		t.Errorf("a second 429 of the same burst cut again: %d", got)
	}
	h.record(agentapi.ClassRateLimited, false, 0, at(200*time.Millisecond))
	if got := h.state(at(0)).Limit; got != 16 {
		t.Errorf("limit after a later 429 = %d, want 16", got)
	}
	calls(t, h, 100, agentapi.ClassAccepted, at(time.Second))
	if got := h.state(at(0)).Limit; got != 16 {
		t.Errorf("limit grew to %d within Retry-After", got)
	}
	calls(t, h, 18, agentapi.ClassAccepted, at(3*time.Second))
	if got := h.state(at(0)).Limit; got != 17 {
		t.Errorf("limit after a round of successes = %d, want 17 (about one more per round)", got)
	}
	if h.state(at(0)).Condition != ConditionNone {
		t.Error("429s with room to slow down stopped the route")
	}
}

func TestHealthRateLimitAtConcurrencyOneStopsTheRoute(t *testing.T) {
	t.Parallel()
	h := newHealth(BreakerSettings{}, 1)
	n := 0
	for h.record(agentapi.ClassRateLimited, false, 3*time.Second, at(0)) != Tripped {
		if n++; n > 100 {
			t.Fatal("429 on every call at concurrency one never stopped the route")
		}
	}
	if n+1 != rateLimitGateStreak {
		t.Errorf("stopped after %d 429s, want %d", n+1, rateLimitGateStreak)
	}
	st := h.state(at(0))
	if st.Condition != ConditionRateLimited {
		t.Fatalf("state %+v, want rate_limited", st)
	}
	if wait := st.NextProbe.Sub(at(0)); wait != 3*time.Second {
		t.Errorf("first probe in %v, want the Retry-After 3s", wait)
	}
}

func TestHealthDisabledAdmitsEverything(t *testing.T) {
	t.Parallel()
	h := newHealth(BreakerSettings{Disabled: true}, 8)
	calls(t, h, 100, agentapi.ClassServerError, at(0))
	h.record(agentapi.ClassUnauthorized, false, 0, at(0))
	if h.admit(at(0)) != Admit || h.state(at(0)).Condition != ConditionNone || h.state(at(0)).Limit != 8 {
		t.Errorf("disabled health gated: %+v", h.state(at(0)))
	}
}

func TestAutoPauseMark(t *testing.T) {
	t.Parallel()
	until := autoPauseUntil(time.Date(2026, 1, 1, 0, 0, 0, 999_000_000, time.UTC))
	if !isAutoPause(until) || !until.After(time.Date(2026, 1, 1, 0, 0, 0, 999_000_000, time.UTC)) {
		t.Errorf("autoPauseUntil = %v", until)
	}
	if isAutoPause(time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC)) {
		t.Error("an operator's whole-second pause taken for agentrelay's")
	}
}

// While another route of the replica is in an outage, the first transient
// failure of this one is the outage too: quiet routes stop at once instead
// of retrying each message until they have min_calls of their own.
func TestHealthAnOutageElsewhereStopsTheRouteAtItsFirstFailure(t *testing.T) {
	h := newTestHealth()
	elsewhere := false
	h.outageElsewhere = func() bool { return elsewhere }
	if calls(t, h, 1, agentapi.ClassServerError, at(0)) != 0 {
		t.Fatal("one failure tripped with no outage elsewhere")
	}
	elsewhere = true
	calls(t, h, 1, agentapi.ClassAccepted, at(0))
	if calls(t, h, 1, agentapi.ClassTimeout, at(0)) != 1 || h.state(at(0)).Condition != ConditionOutage {
		t.Error("a failure during an outage elsewhere did not stop the route")
	}
}
