package consumer

import (
	"errors"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// This file is how a message is called as health allows: the route's, and
// on a route that serves many agents its agent's too (agents.go). While
// what the message needs is stopped, it waits at that gate, or goes back
// to the stream, until it is chosen to probe or the condition ends.

// turn is how a wait at a gate ended.
type turn uint8

const (
	turnResumed turn = iota + 1 // the route (or agent) runs again: call as usual
	turnProbe                   // this message probes
	turnLeave                   // it goes back to the stream until the next probe
	turnPaused                  // an operator paused the route: it goes back at once
	turnStop                    // the relay drains, or the pin is lost: back at once
)

// probeLevel is what a call probes, if anything.
type probeLevel uint8

const (
	probeNone  probeLevel = iota
	probeRoute            // the route is stopped: the call is its probe
	probeAgent            // the event's agent is stopped: the call is its probe
)

var (
	errOperatorPause = errors.New("the route's consumer is paused by an operator")
	errStopped       = errors.New("shutting down, or this replica may no longer own the ordered route, while waiting for a probe")
)

// stopped reports whether the route (or agent) takes no calls but probes:
// a condition holds, or an operator paused the consumer.
func (hs healthState) stopped() bool {
	return hs.Condition != conditionNone || !hs.OperatorPause.IsZero()
}

// call triggers the message as health allows. While the route, or the
// event's agent, is stopped the message waits at its gate (or goes back to
// the stream when the gate holds enough) until it is chosen to probe, the
// condition ends, or it must go back.
func (rn *runner) call(d *delivery) Outcome {
	ag := rn.agents.of(d.dec.trigger, time.Now())
	hold := holding{rn: rn}
	defer hold.quit()
	for {
		probe, out, done := rn.turnFor(d, &hold, ag)
		if done {
			return out
		}
		if rn.rate != nil {
			if err := rn.rate.Wait(rn.life.callCtx); err != nil {
				rn.cancelProbe(ag, probe, rn.fresh(d))
				return Outcome{Class: agentapi.ClassCanceled, Err: err}
			}
		}
		out, stopped := rn.callOnce(d, ag, probe)
		if !stopped {
			return out
		}
		hold.refresh(rn.fresh(d))
	}
}

// turnFor waits until d may be called, and returns what the call probes;
// done says the attempt ends with out instead. The route comes first:
// while it is stopped, no agent probes.
func (rn *runner) turnFor(d *delivery, hold *holding, ag *agentHealth) (probe probeLevel, out Outcome, done bool) {
	for {
		now := time.Now()
		if hs := rn.health.state(now); hs.stopped() {
			probed, out, done := rn.waitTurn(d, hold, nil, hs)
			switch {
			case done:
				return probeNone, out, true
			case probed:
				return probeRoute, Outcome{}, false
			}
			continue // the route resumed: now the agent
		}
		if ag == nil {
			return probeNone, Outcome{}, false
		}
		as := ag.health.state(now)
		if !as.stopped() {
			return probeNone, Outcome{}, false
		}
		probed, out, done := rn.waitTurn(d, hold, ag, as)
		switch {
		case done:
			return probeNone, out, true
		case probed:
			return probeAgent, Outcome{}, false
		}
		// The agent resumed, or the route stopped: look again.
	}
}

// cancelProbe returns a probe that was admitted and not made.
func (rn *runner) cancelProbe(ag *agentHealth, probe probeLevel, fresh bool) {
	switch probe {
	case probeRoute:
		rn.health.cancelProbe(fresh)
	case probeAgent:
		ag.health.cancelProbe(fresh)
	}
}

// waitTurn holds d at the gate of ag (nil: the route's), whose state is
// hs, until its turn. probed says d is to probe; done that the attempt
// ends with out instead (it goes back to the stream).
func (rn *runner) waitTurn(d *delivery, hold *holding, ag *agentHealth, hs healthState) (probed bool, out Outcome, done bool) {
	sc := rn.healthScope
	if ag != nil {
		sc = ag.healthScope
	}
	if !hold.at(ag) && !hold.join(ag, newWaiter(d.dec.key, rn.fresh(d), time.Now())) {
		return false, rn.wayBack(d, hs), true
	}
	switch rn.awaitTurn(hold.w, sc, ag != nil) {
	case turnProbe:
		return true, Outcome{}, false
	case turnResumed:
		return false, Outcome{}, false
	case turnLeave:
		hold.quit()
		return false, rn.wayBack(d, sc.health.state(time.Now())), true
	case turnPaused:
		return false, Outcome{Class: agentapi.ClassCanceled, Err: errOperatorPause}, true
	}
	return false, Outcome{Class: agentapi.ClassCanceled, Err: errStopped}, true
}

// freshWait is how long a due probe waits for a fresh message to be pulled
// before a message that failed before probes instead: a pull's round trip,
// with room for the messages the server redelivers first. Longer only
// delays a resume: a message that failed before and fails again proves
// nothing (the pause is left to lapse, and a fresh message probes next).
const freshWait = 500 * time.Millisecond

// awaitTurn waits at sc's gate until sc resumes, w is chosen to probe (and
// admitted), or w must leave. An agent's wait also ends when the route
// stops: the route's condition comes first.
func (rn *runner) awaitTurn(w *waiter, sc healthScope, agent bool) turn {
	for {
		now := time.Now()
		hs := sc.health.state(now)
		// A due probe waits a little for a fresh message (see
		// freshWait), unless route health's pause holds every delivery
		// back for longer.
		grace := min(hs.Interval, freshWait)
		if !agent && rn.fleet.pausedPast(now.Add(grace)) {
			grace = 0
		}
		switch {
		case agent && rn.health.state(now).stopped():
			return turnResumed
		case !hs.stopped():
			return turnResumed
		case !hs.OperatorPause.IsZero():
			return turnPaused
		case sc.gate.chosen(w, hs, now, grace) && sc.health.admit(now, w.isFresh(sc.gate)) == admitProbe:
			return turnProbe
		}
		wait := hs.NextProbe.Sub(now)
		if wait <= 0 {
			wait = 50 * time.Millisecond // a probe is in flight, or a fresh message is awaited
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-rn.life.changed.wait():
		case <-w.leave:
			t.Stop()
			return turnLeave
		case <-rn.life.drainStarted:
			t.Stop()
			return turnStop
		case <-rn.policy.interrupted():
			t.Stop()
			return turnStop
		}
		t.Stop()
	}
}

// holding is the gate a message waits at, if any: the route's or one
// agent's. A message waits at one gate at a time.
type holding struct {
	rn *runner
	ag *agentHealth // nil: the route's gate
	w  *waiter      // nil: it waits nowhere
}

// at reports whether the message waits at ag's gate (nil: the route's).
func (h *holding) at(ag *agentHealth) bool { return h.w != nil && h.ag == ag }

// join leaves the gate it waits at, if any, and joins ag's with w; it
// reports whether w is held.
func (h *holding) join(ag *agentHealth, w *waiter) bool {
	h.quit()
	held := false
	if ag == nil {
		held = h.rn.gate.join(w)
	} else {
		held = h.rn.agents.join(ag, w)
	}
	if held {
		h.ag, h.w = ag, w
	}
	return held
}

// quit leaves the gate (also when the gate told the waiter to leave: the
// agents' shared bound counts it until then).
func (h *holding) quit() {
	switch {
	case h.w == nil:
	case h.ag == nil:
		h.rn.gate.quit(h.w)
	default:
		h.rn.agents.quit(h.ag, h.w)
	}
	h.ag, h.w = nil, nil
}

// refresh records whether the waiting message is fresh after a call of it.
func (h *holding) refresh(fresh bool) {
	switch {
	case h.w == nil:
	case h.ag == nil:
		h.rn.gate.refresh(h.w, fresh)
	default:
		h.ag.gate.refresh(h.w, fresh)
	}
}

// wayBack is the outcome of a message that goes back to the stream while
// what it needs is stopped (hs): it waits there for the next probe, or,
// when it failed here before, for its own backoff if that is longer. (Not
// longer still: the probe that gets through resumes the route, and what
// waits in the stream then waits for nothing. A fresh message still takes
// the place of one that failed before at the gate.)
func (rn *runner) wayBack(d *delivery, hs healthState) Outcome {
	wait := hs.RetryIn
	if !rn.fresh(d) {
		wait = max(wait, Backoff(rn.route.Retry, max(d.attempts.Failed, 1), 0, 1))
	}
	return Outcome{Class: ClassGated, RouteWide: true, RetryAfter: wait}
}

// callOnce makes one call and tells health and the ledger how it ended.
// stopped reports that the route, or the event's agent, is stopped and the
// outcome is its condition: the message waits at the gate.
func (rn *runner) callOnce(d *delivery, ag *agentHealth, probe probeLevel) (out Outcome, stopped bool) {
	fresh := rn.fresh(d)
	callCtx, end, err := rn.policy.beforeCall(rn.life.callCtx)
	if err != nil {
		rn.cancelProbe(ag, probe, fresh)
		return Outcome{Class: agentapi.ClassCanceled, Err: err}, false
	}
	out = rn.trigger(d.span.context(callCtx), d.dec)
	end()
	now := time.Now()
	c := callResult{class: out.Class, status: out.Status, err: out.Err, retryAfter: out.RetryAfter, fresh: fresh, probe: probe == probeRoute}
	if ag == nil {
		rn.transition(rn.health.record(c, now), out, fresh)
	} else {
		rn.recordAgent(ag, c, probe == probeAgent, out, now)
	}
	hs := rn.health.state(now)
	switch {
	case hs.Condition != conditionNone && hs.Condition.explains(out.Class):
		out.RouteWide, stopped = true, true
	case ag != nil && ag.health.state(now).Condition.explains(out.Class):
		out.RouteWide, stopped = true, true // the agent's condition, not the message's
	case out.Class == agentapi.ClassRateLimited && hs.Throttled:
		out.RouteWide = true // many messages meet 429s: the route's, not this one's
	}
	if suspectClass(out.Class) {
		d.attempts.Failed, d.attempts.Timeouts = rn.ledger.failed(d.seq(), out.Class, ownFailure(out), !hs.SlowAPI, d.attempts.Delivered)
	}
	return out, stopped
}

// recordAgent tells health of a call on a route that serves many agents
// (c.probe: it was the route's probe; agentProbe: the agent's). The
// agent's health takes every outcome but a 429 (the route's: its AIMD
// limit); the route's takes every outcome that is not the agent's own (a
// refused token, an agent that is not runnable, or a failure the agent's
// condition explains). An agent's condition that several agents meet while
// nothing gets through becomes the route's.
func (rn *runner) recordAgent(ag *agentHealth, c callResult, agentProbe bool, out Outcome, now time.Time) {
	if c.class == agentapi.ClassAccepted {
		rn.agents.accepted(now)
	}
	ac := c
	ac.probe = agentProbe
	tr := noChange
	if c.class != agentapi.ClassRateLimited || agentProbe {
		tr = ag.health.record(ac, now)
	}
	rn.agentTransition(ag, tr, out)
	as := ag.health.state(now)
	if c.probe || conditionOf(c.class) == conditionNone && !as.Condition.explains(c.class) {
		rn.transition(rn.health.record(c, now), out, c.fresh)
	}
	if tr == becameStopped && rn.agents.escalates(as.Condition, now) {
		rn.transition(rn.health.adopt(as.Condition, causeOf(c), now), out, c.fresh)
	}
}
