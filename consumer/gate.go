package consumer

import (
	"sync"
	"time"
)

// gate holds the messages that wait while their route is stopped, and
// chooses which of them probes: one that has never failed on this replica
// (a fresh one) whenever one waits. A route stopped by a few bad events
// then resumes as soon as a good event gets through, instead of probing
// for ever with the very events that fail.
//
// With no fresh message waiting when a probe is due, the route first tries
// to get one (the pull loop asks for a message when hasFresh is false); a
// message that failed before probes only when none came within a grace
// period (freshWait): it still shows when a refused token or an agent that
// was not runnable is fixed, and it is all there is when the stream holds
// nothing else.
//
// An unordered route holds at most maxHeld messages here (the rest go back
// to the stream until the next probe), and a fresh one takes the place of
// one that failed before. An ordered route's events wait where they are
// (maxHeld 0: no bound): a nak would let the next event of a key overtake.
type gate struct {
	maxHeld int

	mu       sync.Mutex // guards waiters and dueSince
	waiters  []*waiter
	dueSince time.Time // when a probe fell due with no fresh message waiting
}

// waiter is one message waiting at the gate.
type waiter struct {
	key   string // its Idempotency-Key, for status
	fresh bool   // guarded by gate.mu
	since time.Time
	// leave is closed when it must go back to the stream instead: a fresh
	// message took its place, or everything held goes back.
	leave chan struct{}
	left  bool // guarded by gate.mu
}

// probeCandidates is how many messages an unordered route holds per
// replica while stopped: enough to keep a fresh one at hand, few enough
// that a stopped route holds next to nothing.
const probeCandidates = 4

func newGate(maxHeld int) *gate { return &gate{maxHeld: maxHeld} }

func newWaiter(key string, fresh bool, now time.Time) *waiter {
	return &waiter{key: key, fresh: fresh, since: now, leave: make(chan struct{})}
}

// join adds w, and reports whether it is held. A fresh message that finds
// the gate full takes the place of the one that has waited longest among
// those that failed before; that one is told to leave.
func (g *gate) join(w *waiter) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maxHeld > 0 && len(g.waiters) >= g.maxHeld {
		if !w.fresh {
			return false
		}
		i := g.oldestLocked(false)
		if i < 0 {
			return false
		}
		g.removeLocked(i)
	}
	g.waiters = append(g.waiters, w)
	return true
}

// quit removes w (it probes, or the route resumed, or it is leaving).
func (g *gate) quit(w *waiter) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, x := range g.waiters {
		if x == w {
			g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
			return
		}
	}
}

// chosen reports whether w is the message to probe with now, given the
// route's state: the longest-waiting fresh message whenever a fresh one may
// probe (see healthState.FreshMayProbe); otherwise, when a probe is due and
// no fresh message has come within grace of it falling due, the
// longest-waiting one that failed before.
func (g *gate) chosen(w *waiter, hs healthState, now time.Time, grace time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if i := g.oldestLocked(true); i >= 0 {
		g.dueSince = time.Time{}
		return hs.FreshMayProbe && g.waiters[i] == w
	}
	if !hs.AnyMayProbe {
		return false
	}
	if g.dueSince.IsZero() || g.dueSince.Before(hs.NextProbe) {
		g.dueSince = now
	}
	if now.Sub(g.dueSince) < grace {
		return false
	}
	i := g.oldestLocked(false)
	if i >= 0 && g.waiters[i] == w {
		g.dueSince = time.Time{}
		return true
	}
	return false
}

// refresh records whether w is fresh after a call of it (a failed probe
// makes it suspect).
func (g *gate) refresh(w *waiter, fresh bool) {
	g.mu.Lock()
	w.fresh = fresh
	g.mu.Unlock()
}

// isFresh reads w's freshness under g's lock.
func (w *waiter) isFresh(g *gate) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return w.fresh
}

// hasFresh reports whether a fresh message waits.
func (g *gate) hasFresh() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.oldestLocked(true) >= 0
}

// probeKey is the Idempotency-Key of the message that would probe next.
func (g *gate) probeKey() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := g.oldestLocked(true)
	if i < 0 {
		i = g.oldestLocked(false)
	}
	if i < 0 {
		return ""
	}
	return g.waiters[i].key
}

// releaseAll tells every waiter to leave (an operator paused the route).
func (g *gate) releaseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.waiters) > 0 {
		g.removeLocked(0)
	}
}

// oldestLocked is the index of the longest-waiting fresh waiter (onlyFresh)
// or, among those that failed before, of the longest waiting one; -1 for
// none.
func (g *gate) oldestLocked(onlyFresh bool) int {
	best := -1
	for i, x := range g.waiters {
		if x.fresh != onlyFresh {
			continue
		}
		if best < 0 || x.since.Before(g.waiters[best].since) {
			best = i
		}
	}
	return best
}

// removeLocked drops waiter i and tells it to leave.
func (g *gate) removeLocked(i int) {
	w := g.waiters[i]
	g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
	if !w.left {
		w.left = true
		close(w.leave)
	}
}
