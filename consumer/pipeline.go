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

// triggerID is the trigger id the event is for: the one it names, else the
// route's agent's ("" when the route has none).
func (d *decoded) triggerID(rt Route) string {
	switch {
	case !d.trigger.IsZero():
		return d.trigger.String()
	case rt.Agent != nil:
		return rt.Agent.ID().String()
	}
	return ""
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
	d.span = rn.tracing.start(rn.life.callCtx, m, md, d.dec.triggerID(rn.route))
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
	ctx, span := rn.tracing.startCall(ctx, dec.triggerID(rn.route))
	t0 := time.Now()
	status, err := dec.agent.Trigger(ctx, dec.ev)
	class := agentapi.ClassOfError(err)
	endCall(span, status, class, err)
	// A call its send check refused was never written: not a request.
	if !errors.Is(err, agentapi.ErrNotSent) {
		rn.m.Trigger(status, string(class), time.Since(t0).Seconds())
		if rn.agents != nil {
			rn.m.AgentTrigger(dec.triggerID(rn.route), status, string(class))
		}
	}
	out := Outcome{Class: class, Status: status, Err: err}
	var ae *agentapi.Error
	if errors.As(err, &ae) {
		out.RetryAfter = ae.RetryAfter
	}
	return out
}
