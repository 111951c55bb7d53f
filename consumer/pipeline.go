package consumer

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
)

// This file is the pipeline one message goes through on a handler
// goroutine: decode (once), call as route health allows, decide, settle.
// The verdict Decide returns is carried out once, by settle (settle.go);
// only a retry an ordered route waits out in place goes round again.

// decoded is a message read once: its event, its Idempotency-Key, and why
// it cannot be sent when it cannot.
type decoded struct {
	ev        agentapi.Event
	key       string
	keyErr    error
	reason    deadletter.Reason
	decodeErr error
	trigger   agentapi.TriggerID // the agent it is for; zero: the route's Agent
	agent     Agent              // the agent it is for, resolved once
	agentErr  error              // the route may not call it (trigger_not_allowed)
}

// delivery is one delivery of a message being handled.
type delivery struct {
	msg      *pulledMsg
	md       *jetstream.MsgMetadata
	dec      *decoded
	attempts Attempts
	start    time.Time
	span     *deliverySpan // nil with tracing off
}

func (d *delivery) seq() uint64 { return d.md.Sequence.Stream }

// decode reads m's body and key once; later calls return the same.
func (rn *runner) decode(m *pulledMsg) *decoded {
	if m.dec != nil {
		return m.dec
	}
	// Not the calls' context: a mapping interrupted by the drain would
	// dead-letter the message. Its cost limit bounds it instead.
	r := rn.route.Contract.Read(context.Background(), event.Message{Subject: m.Subject(), Data: m.Data(), Header: m.Headers(), Meta: m.md})
	d := &decoded{ev: r.Event, key: r.Event.IdempotencyKey, keyErr: r.KeyErr, reason: r.Reason, decodeErr: r.Err, trigger: r.TriggerID}
	if d.reason == "" {
		d.agent, d.agentErr = rn.route.agentFor(d.trigger)
	}
	m.dec = d
	return d
}

// handle runs one message through the pipeline.
func (rn *runner) handle(m *pulledMsg) {
	rn.m.Received()
	md, err := m.Metadata()
	if err != nil {
		// Cannot happen for a message from a pull consumer; if it does,
		// leave it to JetStream rather than guess.
		rn.log.Error("message without JetStream metadata; leaving it for redelivery", "subject", m.Subject(), "err", err)
		rn.m.SettleFailed("metadata")
		return
	}
	d := &delivery{msg: m, md: md, dec: rn.decode(m), start: time.Now()}
	d.attempts.Delivered = int(md.NumDelivered)
	d.attempts.Failed, d.attempts.Timeouts = rn.ledger.counts(d.seq())
	d.span = rn.tracing.start(rn.life.callCtx, m, md)
	ka := rn.eng.alive.add(m)
	defer ka.stop()
	for {
		out := rn.attempt(d)
		act := Decide(out, d.attempts, rn.route.Retry, rn.relay.opts.Jitter())
		again, carried := rn.policy.onRetry(act)
		if again {
			rn.logSettled(slog.LevelInfo, "retrying in place (ordered)", d, out, act, nil)
			d.span.event("retrying in place (ordered)", out)
			continue
		}
		rn.settle(d, out, carried)
		return
	}
}

// attempt makes one attempt at the message: a poison message ends here,
// anything else is called as route health allows.
func (rn *runner) attempt(d *delivery) Outcome {
	switch {
	case d.dec.keyErr != nil:
		return Outcome{Class: ClassPoison, Reason: deadletter.ReasonInvalidIdempotencyKey, Err: d.dec.keyErr}
	case d.dec.reason != "":
		return Outcome{Class: ClassPoison, Reason: d.dec.reason, Err: d.dec.decodeErr}
	case d.dec.agentErr != nil:
		return Outcome{Class: ClassPoison, Reason: deadletter.ReasonTriggerNotAllowed, Err: d.dec.agentErr}
	}
	return rn.call(d)
}

// turn is how a wait at the gate ended.
type turn uint8

const (
	turnResumed turn = iota + 1 // the route runs again: call as usual
	turnProbe                   // this message probes
	turnLeave                   // it goes back to the stream until the next probe
	turnPaused                  // an operator paused the route: it goes back at once
	turnStop                    // the relay drains, or the pin is lost: back at once
)

// call triggers the message as route health allows. While the route is
// stopped the message waits at the gate (or goes back to the stream when
// the gate holds enough) until it is chosen to probe, the route resumes,
// or it must go back.
func (rn *runner) call(d *delivery) Outcome {
	var w *waiter
	defer func() {
		if w != nil {
			rn.gate.quit(w)
		}
	}()
	for {
		if rn.rate != nil {
			if err := rn.rate.Wait(rn.life.callCtx); err != nil {
				return Outcome{Class: agentapi.ClassCanceled, Err: err}
			}
		}
		probe := false
		if hs := rn.health.state(time.Now()); hs.stopped() {
			if w == nil {
				w = newWaiter(d.dec.key, rn.fresh(d), time.Now())
				if !rn.gate.join(w) {
					w = nil
					return rn.wayBack(d, hs)
				}
			}
			switch rn.awaitTurn(w) {
			case turnProbe:
				probe = true
			case turnLeave:
				w = nil
				return rn.wayBack(d, rn.health.state(time.Now()))
			case turnPaused:
				return Outcome{Class: agentapi.ClassCanceled, Err: errOperatorPause}
			case turnStop:
				return Outcome{Class: agentapi.ClassCanceled, Err: errStopped}
			}
		}
		out, stopped := rn.callOnce(d, probe)
		if !stopped {
			return out
		}
		if w != nil {
			rn.gate.refresh(w, rn.fresh(d))
		}
	}
}

var (
	errOperatorPause = errors.New("the route's consumer is paused by an operator")
	errStopped       = errors.New("shutting down, or this replica may no longer own the ordered route, while waiting for a probe")
)

// stopped reports whether the route takes no calls but probes: a
// route-wide condition holds, or an operator paused the consumer.
func (hs healthState) stopped() bool {
	return hs.Condition != conditionNone || !hs.OperatorPause.IsZero()
}

// awaitTurn waits at the gate until the route resumes, w is chosen to
// probe (and admitted), or w must leave.
func (rn *runner) awaitTurn(w *waiter) turn {
	for {
		now := time.Now()
		hs := rn.health.state(now)
		switch {
		case !hs.stopped():
			return turnResumed
		case !hs.OperatorPause.IsZero():
			return turnPaused
		case rn.gate.chosen(w, hs, now, hs.Interval) && rn.health.admit(now, w.isFresh(rn.gate)) == admitProbe:
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

// wayBack is the outcome of a message that goes back to the stream while
// the route is stopped: it waits there for the next probe, or, when it
// failed here before, its own backoff and a probe interval more, so that
// the messages pulled to probe with are fresh ones.
func (rn *runner) wayBack(d *delivery, hs healthState) Outcome {
	wait := hs.RetryIn
	if !rn.fresh(d) {
		wait = max(wait, Backoff(rn.route.Retry, max(d.attempts.Failed, 1), 0, 1)) + rn.route.Breaker.MaxProbeInterval
	}
	return Outcome{Class: ClassGated, RouteWide: true, RetryAfter: wait}
}

// callOnce makes one call and tells route health and the ledger how it
// ended. stopped reports that the route is stopped and the outcome is the
// route's condition: the message waits at the gate.
func (rn *runner) callOnce(d *delivery, probe bool) (out Outcome, stopped bool) {
	fresh := rn.fresh(d)
	end, err := rn.policy.beforeCall(rn.life.callCtx)
	if err != nil {
		if probe {
			rn.health.cancelProbe(fresh)
		}
		return Outcome{Class: agentapi.ClassCanceled, Err: err}, false
	}
	out = rn.trigger(d.span.context(rn.life.callCtx), d.dec)
	end()
	now := time.Now()
	tr := rn.health.record(callResult{class: out.Class, status: out.Status, err: out.Err,
		retryAfter: out.RetryAfter, fresh: fresh, probe: probe}, now)
	rn.transition(tr, out, fresh)
	hs := rn.health.state(now)
	switch {
	case hs.Condition != conditionNone && hs.Condition.explains(out.Class):
		out.RouteWide, stopped = true, true
	case out.Class == agentapi.ClassRateLimited && hs.Throttled:
		out.RouteWide = true // many messages meet 429s: the route's, not this one's
	}
	if suspectClass(out.Class) {
		d.attempts.Failed, d.attempts.Timeouts = rn.ledger.failed(d.seq(), out.Class, ownFailure(out), !hs.SlowAPI, d.attempts.Delivered)
	}
	return out, stopped
}

// fresh reports whether d's message has never failed, as far as anyone
// can tell: no call of it failed here, and this is its first delivery (an
// earlier one may have failed on another replica). Only fresh messages
// prove a route-wide condition, and they probe first.
func (rn *runner) fresh(d *delivery) bool {
	return d.attempts.Delivered <= 1 && rn.ledger.fresh(d.seq())
}

// suspectClass reports whether a call that ended in class makes its
// message suspect (no longer fresh): a failure that may be the message's.
// A 401 or 409 is the route's whoever calls, and an answer of the API
// that refuses the message ends it.
func suspectClass(c agentapi.Class) bool {
	return c.Transient() || c == agentapi.ClassUnexpected || c == agentapi.ClassRateLimited
}

// trigger calls the agent dec is for under ctx: the calls' context, or a
// delivery span's context derived from it.
func (rn *runner) trigger(ctx context.Context, dec *decoded) Outcome {
	ctx, span := rn.tracing.startCall(ctx)
	t0 := time.Now()
	status, err := dec.agent.Trigger(ctx, dec.ev)
	class := agentapi.ClassOfError(err)
	endCall(span, status, class, err)
	rn.m.Trigger(status, string(class), time.Since(t0).Seconds())
	out := Outcome{Class: class, Status: status, Err: err}
	var ae *agentapi.Error
	if errors.As(err, &ae) {
		out.RetryAfter = ae.RetryAfter
	}
	return out
}
