package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fleetGate carries a route's health to every replica through the
// consumer's pause (nats-server 2.11+): when this replica detects a
// route-wide condition it pauses the consumer, so no replica takes new
// deliveries, until a little after its next probe; a failed probe extends
// the pause, and the probe that gets through resumes the consumer. A
// replica that holds a probe of its own and sees the consumer resumed by
// another probes at once, so the first success anywhere resumes the route
// everywhere. Without pause support every replica gates itself.
//
// The pause is short and extended by each probe, so a replica that dies
// while holding it stops the route for at most a few seconds. agentrelay
// marks its own pauses by their sub-second part (autoPauseNanos) and only
// ever resumes or extends those: an operator's pause (agentrelay pause,
// nats consumer pause) is left alone.
type fleetGate struct {
	rn   *runner
	kick chan struct{}

	mu        sync.Mutex
	supported bool
	want      time.Time // pause until this; zero: resume
	pending   bool      // want has not been applied yet
	seen      bool      // the consumer was seen paused since this replica was gated
	warned    bool
}

// autoPauseNanos is the sub-second part of every pause deadline agentrelay
// sets, to tell its own pauses from an operator's.
const autoPauseNanos = 424_242_424

// minPauseServer is the first nats-server with consumer pause.
const minPauseServer = "2.11.0"

func newFleetGate(rn *runner) *fleetGate {
	return &fleetGate{rn: rn, kick: make(chan struct{}, 1)}
}

// isAutoPause reports whether a pause deadline is one agentrelay set.
func isAutoPause(until time.Time) bool {
	return until.Nanosecond() == autoPauseNanos
}

// IsRouteHealthPause reports whether a consumer's pause deadline is one a
// replica set for route health (rather than an operator's pause).
func IsRouteHealthPause(until time.Time) bool { return isAutoPause(until) }

// autoPauseUntil marks t as agentrelay's own pause deadline.
func autoPauseUntil(t time.Time) time.Time {
	return t.Truncate(time.Second).Add(time.Second + autoPauseNanos)
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
// out, so a handler never waits for the JetStream API.
func (f *fleetGate) apply(tr Transition, hs HealthState) {
	f.mu.Lock()
	switch tr {
	case Tripped, ProbeFailed:
		// Until a probe interval past the next probe: the probe itself
		// (by this replica) is a held message, which needs no delivery;
		// the margin lets the pause lapse soon if this replica dies.
		f.want = autoPauseUntil(hs.NextProbe.Add(hs.Interval))
		if tr == Tripped {
			f.seen = false
		}
	case Resumed:
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
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-f.kick:
			f.sync()
		case <-tick.C:
			if f.rn.health.state(time.Now()).Condition != ConditionNone {
				f.sync()
				f.rn.readLag(context.Background())
			}
		}
	}
}

// sync carries out the latest wanted state, if any.
func (f *fleetGate) sync() {
	f.mu.Lock()
	want, pending, supported := f.want, f.pending, f.supported
	f.pending = false
	f.mu.Unlock()
	if !pending || !supported {
		return
	}
	cp := f.rn.cons.Load()
	if cp == nil {
		return
	}
	rt := f.rn.route
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	info, err := (*cp).Info(ctx)
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

// observe takes the consumer's pause state as read from the server. A
// replica that is gated and sees the consumer run again (another replica's
// probe got through, or the pause lapsed) probes at once.
func (f *fleetGate) observe(paused bool, until time.Time) {
	f.mu.Lock()
	if paused && isAutoPause(until) {
		f.seen = true
		f.mu.Unlock()
		return
	}
	resumedElsewhere := f.seen && !paused
	f.seen = false
	f.mu.Unlock()
	if resumedElsewhere && f.rn.health.state(time.Now()).Condition != ConditionNone {
		f.rn.health.probeNow(time.Now())
		f.rn.notify()
	}
}
