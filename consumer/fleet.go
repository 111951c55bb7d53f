package consumer

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/routestatus"
)

// fleetGate carries a route's health to every replica through the
// consumer's pause (nats-server 2.11+): when this replica detects a
// route-wide condition it pauses the consumer, so no replica takes new
// deliveries, until a little after its next probe. A failed probe of a
// fresh message extends the pause (for a refused token or an agent that is
// not runnable, any failed probe does); otherwise the pause lapses, so that
// a fresh message can be pulled to probe with: a route is never held
// stopped by messages that fail on their own. The probe that gets through
// resumes the consumer.
//
// Every replica learns of a pause at once from the server's pause
// advisory (and from its reads of the consumer): a healthy replica that
// sees route health's pause stops too, under the condition the pause names
// (see autoPauseUntil), and probes like the replica that paused. A replica
// that is stopped and sees the consumer run again probes at once, so the
// first success anywhere resumes the route everywhere. Without pause
// support every replica gates itself.
//
// The pause is short and extended only by probes, so a replica that dies
// while holding it stops the route for at most a few seconds. agentrelay
// marks its own pauses by their sub-second part and only ever resumes or
// extends those: an operator's pause (agentrelay pause, nats consumer
// pause) is left alone, and stops the route's calls and probes until it
// ends.
type fleetGate struct {
	rn   *runner
	kick chan struct{}
	// news takes in one advisory or read at a time, so that no advisory
	// comes between a read's check that none overtook it and its taking
	// in (see takeRead).
	news sync.Mutex

	mu        sync.Mutex // guards every field below
	supported bool
	want      time.Time // pause until this; zero: resume
	pending   bool      // want has not been applied yet
	seen      bool      // the consumer was seen paused since this replica was gated
	warned    bool
	by        string    // who holds the consumer paused, as last read
	until     time.Time // route health's pause deadline, as last read
	// advised is who paused the consumer as the latest pause advisory
	// said (reads, which may be answered before an advisory and taken in
	// after it, never change it).
	advised string
	own     time.Time // the latest pause deadline this replica set
	// operator is an operator's pause deadline as last seen, until the
	// pause ends or is resumed; restore is one to put back: route health's
	// pause replaced it (see observe).
	operator, restore time.Time
	// pausedFloor is the consumer's ack floor as first read paused while
	// this replica was stopped since pausedSince (see progress).
	pausedFloor uint64
	pausedSince time.Time
	// advisories counts the pause advisories taken in (see beginRead).
	advisories uint64
}

// minPauseServer is the first nats-server with consumer pause.
const minPauseServer = "2.11.0"

func newFleetGate(rn *runner) *fleetGate {
	return &fleetGate{rn: rn, kick: make(chan struct{}, 1)}
}

// isAutoPause reports whether a pause deadline is one agentrelay set (see
// routestatus.HealthPauseUntil).
func isAutoPause(until time.Time) bool { return routestatus.IsHealthPause(until) }

// pauseCondition is the condition an agentrelay pause deadline names: its
// code is the condition's index in conditions; an earlier version's mark
// names none, and reads as an outage.
func pauseCondition(until time.Time) condition {
	cs := conditions()
	if i, ok := routestatus.HealthPauseCode(until); ok && i > 0 && i < len(cs) {
		return cs[i]
	}
	return conditionOutage
}

// autoPauseUntil marks t as agentrelay's own pause deadline for cond.
func autoPauseUntil(t time.Time, cond condition) time.Time {
	return routestatus.HealthPauseUntil(t, max(slices.Index(conditions(), cond), 0))
}

// pauseUntil is the consumer's pause deadline (zero when not paused).
func pauseUntil(info *jetstream.ConsumerInfo) time.Time {
	if !info.Paused || info.Config.PauseUntil == nil {
		return time.Time{}
	}
	return *info.Config.PauseUntil
}

// enable turns fleet-wide pauses on when the server supports them.
func (f *fleetGate) enable(serverVersion string) {
	f.mu.Lock()
	f.supported = serverVersion != "" && versionAtLeast(serverVersion, minPauseServer)
	f.mu.Unlock()
}

// apply records what a health transition asks of the fleet; run carries it
// out, so a handler never waits for the JetStream API. A failed probe
// extends the pause only when extend says it proved the condition again
// (see runner.transition); otherwise the pause lapses when it was due to.
func (f *fleetGate) apply(tr transition, hs healthState, extend bool) {
	f.mu.Lock()
	switch {
	case tr == probeFailed && !extend:
		f.mu.Unlock()
		return
	case tr == becameStopped, tr == probeFailed:
		// Until a probe interval past the next probe: the probe itself
		// (by this replica) is a held message, which needs no delivery;
		// the margin lets the pause lapse soon if this replica dies.
		f.want = autoPauseUntil(hs.NextProbe.Add(hs.Interval), hs.Condition)
		if tr == becameStopped {
			f.seen = false
		}
	case tr == resumed:
		f.want = time.Time{}
	default:
		f.mu.Unlock()
		return
	}
	f.pending = true
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// run applies the wanted pause state, and while this replica is gated
// watches whether another replica resumed the consumer.
func (f *fleetGate) run(stop <-chan struct{}) {
	if unsub := f.watchAdvisories(); unsub != nil {
		defer unsub()
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-f.kick:
			f.sync()
		case <-tick.C:
			if f.rn.health.state(time.Now()).stopped() {
				f.sync()
				f.rn.readLag(context.Background())
			}
		}
	}
}

// sync carries out the latest wanted state, if any.
func (f *fleetGate) sync() {
	f.mu.Lock()
	want, pending, supported, restore := f.want, f.pending, f.supported, f.restore
	f.pending, f.restore = false, time.Time{}
	f.mu.Unlock()
	if !pending || !supported {
		return
	}
	c := f.rn.bound.consumer()
	if c == nil {
		return
	}
	rt := f.rn.route
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if !restore.IsZero() {
		if _, err := f.rn.relay.js.PauseConsumer(ctx, rt.Stream, rt.Durable, restore); err != nil {
			f.mu.Lock()
			f.restore = restore
			f.mu.Unlock()
			f.retry(err)
		}
		return
	}
	info, err := c.Info(ctx)
	if err == nil && !f.rn.bound.credible(info) {
		err = errors.New("a consumer info answer without cluster information")
	}
	if err != nil {
		f.retry(err)
		return
	}
	js := f.rn.relay.js
	switch {
	case info.Paused && !isAutoPause(pauseUntil(info)):
		f.warnOnce("the consumer is paused by an operator; leaving the pause alone")
	case want.IsZero():
		if info.Paused {
			_, err = js.ResumeConsumer(ctx, rt.Stream, rt.Durable)
		}
	case !info.Paused || pauseUntil(info).Before(want):
		f.mu.Lock()
		f.own = want
		f.mu.Unlock()
		_, err = js.PauseConsumer(ctx, rt.Stream, rt.Durable, want)
		if err == nil {
			f.mu.Lock()
			f.seen = true
			f.mu.Unlock()
		}
	}
	if err != nil {
		f.retry(err)
	}
}

// retry keeps a wanted state that could not be applied for the next tick.
func (f *fleetGate) retry(err error) {
	f.rn.log.Debug("could not apply the route's pause state; retrying", "err", err)
	f.mu.Lock()
	f.pending = true
	f.mu.Unlock()
}

func (f *fleetGate) warnOnce(msg string) {
	f.mu.Lock()
	warned := f.warned
	f.warned = true
	f.mu.Unlock()
	if !warned {
		f.rn.log.Warn(msg)
	}
}

// pausedPast reports whether route health's pause, as last read, holds
// deliveries back until after t: no fresh message can come before then.
func (f *fleetGate) pausedPast(t time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.by == PausedByRouteHealth && f.until.After(t)
}

// pausedBy says who holds the consumer paused, as last read.
func (f *fleetGate) pausedBy() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.by
}
