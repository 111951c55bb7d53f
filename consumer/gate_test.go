package consumer

import (
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// The gate, without NATS: which waiting message probes a stopped route.

func due(now time.Time) healthState {
	return healthState{Condition: conditionOutage, NextProbe: now, Interval: time.Second, AnyMayProbe: true, FreshMayProbe: true}
}

func left(w *waiter) bool {
	select {
	case <-w.leave:
		return true
	default:
		return false
	}
}

// A fresh message probes whenever one waits, even when messages that
// failed before have waited longer: a route stopped by a few bad events
// resumes with the first good one (issue 17, finding 1).
func TestGateProbesWithAFreshMessageFirst(t *testing.T) {
	t.Parallel()
	g := newGate(probeCandidates)
	bad := newWaiter("bad", false, at(0))
	good := newWaiter("good", true, at(time.Second))
	g.join(bad)
	g.join(good)
	if g.chosen(bad, due(at(2*time.Second)), at(2*time.Second), time.Second) {
		t.Error("a message that failed before was chosen while a fresh one waits")
	}
	if !g.chosen(good, due(at(2*time.Second)), at(2*time.Second), time.Second) {
		t.Error("the fresh message was not chosen")
	}
	if g.probeKey() != "good" {
		t.Errorf("probe key %q, want the fresh message's", g.probeKey())
	}
}

// With no fresh message waiting, a due probe waits a grace period for one
// to be pulled; only then does a message that failed before probe.
func TestGateFallsBackToAFailedMessageAfterAGrace(t *testing.T) {
	t.Parallel()
	g := newGate(probeCandidates)
	bad := newWaiter("bad", false, at(0))
	g.join(bad)
	if g.hasFresh() {
		t.Fatal("hasFresh with only a failed message waiting")
	}
	hs := due(at(time.Second))
	if g.chosen(bad, hs, at(time.Second), time.Second) {
		t.Error("a failed message probed at once, with no chance to pull a fresh one")
	}
	if g.chosen(bad, hs, at(1500*time.Millisecond), time.Second) {
		t.Error("a failed message probed within the grace")
	}
	if !g.chosen(bad, hs, at(2*time.Second), time.Second) {
		t.Error("a failed message did not probe after the grace")
	}
}

func TestGateChoosesNobodyRouteHealthDoesNotLetProbe(t *testing.T) {
	t.Parallel()
	g := newGate(probeCandidates)
	f, b := newWaiter("f", true, at(0)), newWaiter("b", false, at(0))
	g.join(f)
	g.join(b)
	hs := due(at(time.Second))
	hs.FreshMayProbe = false // a fresh probe failed and the next is not due, or one is in flight
	if g.chosen(f, hs, at(time.Second), time.Second) || g.chosen(b, hs, at(3*time.Second), time.Second) {
		t.Error("chosen while no fresh message may probe, and one waits")
	}
	g.quit(f)
	hs.AnyMayProbe = false
	if g.chosen(b, hs, at(5*time.Second), time.Second) {
		t.Error("a failed message chosen while no probe is due")
	}
}

// An unordered route holds a few messages while stopped; a fresh one
// takes the place of the longest-waiting one that failed before, which is
// told to leave.
func TestGateHoldsAFewAndAFreshMessageTakesAFailedOnesPlace(t *testing.T) {
	t.Parallel()
	g := newGate(2)
	a, b := newWaiter("a", false, at(0)), newWaiter("b", false, at(time.Second))
	if !g.join(a) || !g.join(b) {
		t.Fatal("the gate did not hold two")
	}
	if g.join(newWaiter("c", false, at(2*time.Second))) {
		t.Error("a third failed message was held by a gate of two")
	}
	f := newWaiter("f", true, at(3*time.Second))
	if !g.join(f) {
		t.Fatal("a fresh message was not held")
	}
	if !left(a) || left(b) {
		t.Errorf("left: a %v b %v, want the longest-waiting failed one (a) only", left(a), left(b))
	}
	if g.join(newWaiter("g", true, at(4*time.Second))) && g.join(newWaiter("h", true, at(5*time.Second))) {
		t.Error("fresh messages pushed out fresh ones")
	}
	g.releaseAll()
	if !left(b) || !left(f) {
		t.Error("releaseAll left a waiter held")
	}
}

// An ordered route's events all wait where they are: no bound.
func TestGateOfAnOrderedRouteHoldsEveryone(t *testing.T) {
	t.Parallel()
	g := newGate(0)
	for i := range 100 {
		if !g.join(newWaiter("k", i%2 == 0, at(time.Duration(i)))) {
			t.Fatalf("waiter %d not held", i)
		}
	}
}

// The ledger keeps a message's own failures, and counts its earlier
// deliveries as failures once it fails on its own: its budget holds across
// replicas.
func TestLedgerCountsEarlierDeliveriesOfAMessageThatFailsOnItsOwn(t *testing.T) {
	t.Parallel()
	l := newLedger()
	if !l.fresh(7) {
		t.Fatal("an unknown message is not fresh")
	}
	if f, _ := l.failed(7, agentapi.ClassServerError, false, true, 1); f != 0 || l.fresh(7) {
		t.Errorf("a route-wide failure: own %d, fresh %v; want 0 and not fresh", f, l.fresh(7))
	}
	if f, _ := l.failed(7, agentapi.ClassServerError, true, true, 5); f != 5 {
		t.Errorf("an own failure at the fifth delivery: own %d, want 5 (four elsewhere, this one)", f)
	}
	if f, to := l.failed(7, agentapi.ClassTimeout, true, true, 6); f != 6 || to != 1 {
		t.Errorf("own %d timeouts %d, want 6 and 1", f, to)
	}
	l.forget(7)
	if f, _ := l.counts(7); f != 0 || !l.fresh(7) {
		t.Error("forget kept the record")
	}
}
