package consumer

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// aimd adapts a route's concurrency to 429s (additive increase,
// multiplicative decrease), reacting to the share of distinct messages
// answered 429, not to the retries of one: a fresh message's 429 halves
// the concurrency (at most once per minCutSpacing, so one burst of 429s
// from calls already in flight counts once) when a share of the fresh
// calls of late met one too, and holds growth for its Retry-After; a
// success adds one call per round of calls. One conversation's rate limit
// retried over and over never slows the route. It is part of health and
// guarded by health's lock.
type aimd struct {
	max        int
	minCalls   uint32
	limit      float64
	lastCut    time.Time
	holdGrowth time.Time // no additive increase before this (Retry-After)
	streak     int       // fresh 429s in a row at a concurrency of one
	fresh      shareWindow
}

// rateLimitWindow is how far back the share of 429s looks: short, so that
// the route slows within a fraction of a second of a rate limit most calls
// meet.
const rateLimitWindow = time.Second

func newAIMD(max int, s BreakerSettings) aimd {
	return aimd{max: max, minCalls: s.MinCalls, limit: float64(max), fresh: newShareWindow(rateLimitWindow)}
}

// record takes a call's outcome; maxHold caps how long a Retry-After holds
// growth.
func (a *aimd) record(c callResult, now time.Time, maxHold time.Duration) {
	limited := c.class == agentapi.ClassRateLimited
	if c.fresh {
		a.fresh.add(now, limited)
	}
	switch {
	case limited && c.fresh:
		if a.limit <= 1 {
			a.streak++
		}
		if !a.widespread(now, a.minCalls) {
			// One message's limit among calls that pass, or too few
			// fresh calls of late to tell: its own (it counts towards
			// its budget), not the route's.
			return
		}
		if now.Sub(a.lastCut) >= minCutSpacing {
			a.limit = max(1, a.limit/2)
			a.lastCut = now
		}
		a.holdGrowth = maxTime(a.holdGrowth, now.Add(min(c.retryAfter, maxHold)))
	case c.class == agentapi.ClassAccepted:
		a.streak = 0
		if now.After(a.holdGrowth) && a.limit < float64(a.max) {
			a.limit = min(float64(a.max), a.limit+1/a.limit)
		}
	}
}

// widespread reports whether at least rateLimitShare of the fresh calls in
// the window, at least minCalls of them, met a 429, and more than one
// message did: a message is fresh for its first call only, so one message's
// 429 among exactly minCalls fresh calls (10 %) is still its own.
func (a *aimd) widespread(now time.Time, minCalls uint32) bool {
	calls, limited := a.fresh.counts(now)
	return calls >= int(minCalls) && limited >= 2 && float64(limited) >= rateLimitShare*float64(calls)
}

// stopsRoute reports whether fresh messages met 429s in a row at a
// concurrency of one: there is no slower left to go.
func (a *aimd) stopsRoute() bool { return a.streak >= rateLimitGateStreak }

func (a *aimd) current() int { return int(a.limit) }

// resumed: a route that was rate limited comes back at the speed it had
// (at least one) and grows; any other comes back at full speed.
func (a *aimd) resumed() {
	a.streak = 0
	if a.limit < 1 {
		a.limit = 1
	}
}

// shareWindow counts calls and those of them that met a condition over a
// rolling window of ten buckets.
type shareWindow struct {
	bucket  time.Duration
	buckets [10]shareBucket
}

type shareBucket struct {
	epoch        int64 // which bucket period it counts
	calls, match int
}

func newShareWindow(window time.Duration) shareWindow {
	return shareWindow{bucket: max(window/10, time.Millisecond)}
}

func (w *shareWindow) add(now time.Time, match bool) {
	e := now.UnixNano() / int64(w.bucket)
	b := &w.buckets[e%int64(len(w.buckets))]
	if b.epoch != e {
		*b = shareBucket{epoch: e}
	}
	b.calls++
	if match {
		b.match++
	}
}

func (w *shareWindow) counts(now time.Time) (calls, match int) {
	e := now.UnixNano() / int64(w.bucket)
	for _, b := range w.buckets {
		if e-b.epoch < int64(len(w.buckets)) && b.epoch <= e {
			calls += b.calls
			match += b.match
		}
	}
	return calls, match
}
