package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// delivery is one delivery of a message being handled.
type delivery struct {
	msg      inbound
	md       *jetstream.MsgMetadata
	key      string // the Idempotency-Key (empty when the message has none usable)
	attempts Attempts
	start    time.Time
	// For a dead-lettered event of an ordered route: its conversation key
	// and the stream sequence of the next event of the key, if known.
	ordered string
	next    uint64
	hasNext bool
	span    *deliverySpan // nil with tracing off
}

// dispatch hands msg to an idle handler goroutine, or starts one.
//
// Handler goroutines are reused rather than started per message: a call
// goes deep into net/http, so a new goroutine's stack grows (and is copied)
// two or three times on every message; a reused one has grown already.
func (rn *runner) dispatch(msg inbound) {
	select {
	case rn.idle <- msg:
	default:
		go rn.handleLoop(msg)
	}
}

// handleLoop handles msg, then further messages from dispatch, until none
// comes for handlerIdle or the drain is over.
func (rn *runner) handleLoop(msg inbound) {
	t := time.NewTimer(handlerIdle)
	defer t.Stop()
	for {
		rn.handle(msg)
		t.Reset(handlerIdle)
		select {
		case msg = <-rn.idle:
		case <-t.C:
			return
		case <-rn.quit:
			return
		}
	}
}

// handle runs one message through the pipeline: decode, call, decide,
// settle.
func (rn *runner) handle(msg inbound) {
	defer rn.done()
	d := delivery{msg: msg, start: time.Now()}
	rn.m.Received()
	md, err := msg.Metadata()
	if err != nil {
		// Cannot happen for a message from a pull consumer; if it does,
		// leave it to JetStream rather than guess.
		rn.log.Error("message without JetStream metadata; leaving it for redelivery", "subject", msg.Subject(), "err", err)
		rn.m.SettleFailed("metadata")
		return
	}
	d.md = md
	d.attempts.Delivered = int(md.NumDelivered)
	d.span = rn.tracing.start(rn.callCtx, msg, md)
	ka := rn.alive.add(msg)
	defer ka.stop()

	h := msg.Headers()
	key, keyErr := event.IdempotencyKey(h, md)
	d.key = key
	ev, reason, decodeErr := rn.route.Contract.Decode(msg.Data(), h)
	jitter := rn.relay.opts.Jitter()
	for {
		var out Outcome
		switch {
		case keyErr != nil:
			out = Outcome{Class: ClassPoison, Reason: deadletter.ReasonInvalidIdempotencyKey, Err: keyErr}
		case reason != "":
			out = Outcome{Class: ClassPoison, Reason: reason, Err: decodeErr}
		default:
			ev.IdempotencyKey = key
			out = rn.call(d.span.context(rn.callCtx), ev)
		}
		if ownFailure(out) {
			d.attempts.Failed = rn.failed(md.Sequence.Stream)
		}
		act := Decide(out, d.attempts, rn.route.Retry, jitter)
		if rn.order != nil && act.Verdict == verdict.Retry && act.Delay > 0 && rn.retryInPlace(act.Delay) {
			// An ordered event is retried where it is: a nak would let
			// the next event of its key overtake it.
			rn.logSettled(slog.LevelInfo, "retrying in place (ordered)", d, out, act, nil)
			d.span.event("retrying in place (ordered)", out)
			jitter = rn.relay.opts.Jitter()
			continue
		}
		if rn.order != nil && act.Verdict == verdict.Retry {
			act.Delay = 0 // handed back (drain, or another replica owns the route now): at once, in order
		}
		if rn.order != nil && act.Verdict == verdict.DeadLetter && ev.ConversationKey != "" {
			d.ordered = ev.ConversationKey
			d.next, d.hasNext = rn.order.next(ev.ConversationKey, md)
		}
		for rn.settle(d, out, act, jitter) {
			// An ordered event whose dead letter could not be stored stays
			// where it is: a nak would release the next event of its key
			// before it. Try again after a backoff, or hand it back if the
			// relay drains or another replica owns the route now.
			if !rn.retryInPlace(Backoff(rn.route.Retry, max(d.attempts.Failed, 1), 0, jitter)) {
				act = Action{Verdict: verdict.Retry}
			}
		}
		if rn.order != nil {
			rn.order.settled(md)
		}
		return
	}
}

// retryInPlace waits out an ordered event's retry delay while it is held
// (kept alive). It returns false when the event must be handed back
// instead: the relay is draining or another replica owns the route now.
func (rn *runner) retryInPlace(delay time.Duration) bool {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-rn.drainStarted:
	case <-rn.order.lostPin():
	}
	return false
}

// call triggers ev as route health allows. When the route is gated, or the
// call meets a route-wide condition, one message per replica is held (kept
// alive) to probe the route with when the next probe is due; every other
// message comes back as a route-wide outcome, to be handed back until the
// next probe. The held message spends no delivery attempt however many
// probes it makes.
func (rn *runner) call(ctx context.Context, ev agentapi.Event) Outcome {
	held := false
	defer func() {
		if held {
			rn.holding.Store(false)
			rn.signal()
		}
	}()
	for {
		if rn.rate != nil {
			if err := rn.rate.Wait(rn.callCtx); err != nil {
				return Outcome{Class: agentapi.ClassCanceled, Err: err}
			}
		}
		var out Outcome
		adm := rn.health.admit(time.Now())
		if adm == Gated {
			out = Outcome{Class: ClassGated}
		} else {
			out = rn.trigger(ctx, ev)
			tr := rn.health.record(out.Class, adm == Probe, out.RetryAfter, time.Now())
			rn.transition(tr, out)
		}
		hs := rn.health.state(time.Now())
		if hs.Condition == ConditionNone || (out.Class != ClassGated && !hs.Condition.explains(out.Class)) {
			return out
		}
		out.RouteWide = true
		out.RetryAfter = hs.RetryIn
		switch {
		case rn.order != nil:
			// An ordered event waits where it is, whichever probes.
		case !held && !rn.holding.CompareAndSwap(false, true):
			return out
		default:
			held = true
		}
		if !rn.waitForProbe() {
			return Outcome{Class: agentapi.ClassCanceled, Err: errors.New("shutting down while holding a probe message")}
		}
	}
}

// waitForProbe waits until the held message may probe (or the route has
// resumed). It returns false when the relay starts draining.
func (rn *runner) waitForProbe() bool {
	for {
		now := time.Now()
		hs := rn.health.state(now)
		wait := hs.NextProbe.Sub(now)
		if hs.Condition == ConditionNone || (wait <= 0 && !hs.Probing) {
			return true
		}
		if wait <= 0 {
			wait = 50 * time.Millisecond // another message's probe is in flight
		}
		evt := rn.healthEvent()
		var lost <-chan struct{}
		if rn.order != nil {
			lost = rn.order.lostPin()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-evt:
		case <-rn.drainStarted:
			t.Stop()
			return false
		case <-lost:
			t.Stop()
			return false
		}
		t.Stop()
	}
}

// healthEvent returns a channel closed at the next health transition.
func (rn *runner) healthEvent() <-chan struct{} {
	rn.evtMu.Lock()
	defer rn.evtMu.Unlock()
	return rn.healthEvt
}

// transition makes a health transition visible and acts on it fleet-wide.
func (rn *runner) transition(tr Transition, out Outcome) {
	if tr == NoChange {
		return
	}
	now := time.Now()
	hs := rn.health.state(now)
	cond := hs.Condition
	if tr == Resumed {
		cond = hs.Was
	}
	rn.m.SetHealth(hs.Condition.String(), conditionLabels())
	rn.m.HealthTransition(tr.String(), cond.String())
	attrs := []any{"condition", cond.String(), "class", string(out.Class)}
	if out.Status != 0 {
		attrs = append(attrs, "status", out.Status)
	}
	switch tr {
	case Tripped:
		rn.log.Warn("route stopped: route-wide condition; probing with single events", append(attrs, "next_probe_in", hs.RetryIn)...)
	case ProbeFailed:
		rn.log.Info("probe failed; route stays stopped", append(attrs, "next_probe_in", hs.RetryIn, "stopped_for", now.Sub(hs.Since).Round(time.Millisecond))...)
	case Resumed:
		rn.log.Info("probe succeeded: route resumed", append(attrs, "stopped_for", now.Sub(hs.WasSince).Round(time.Millisecond))...)
	}
	switch {
	case tr == Tripped && cond == ConditionOutage:
		rn.relay.outages.Add(1)
	case tr == Resumed && cond == ConditionOutage:
		rn.relay.outages.Add(-1)
	}
	rn.fleet.apply(tr, hs)
	rn.notify()
}

// notify wakes whatever waits on route health: a held probe, the pull loop.
func (rn *runner) notify() {
	rn.evtMu.Lock()
	close(rn.healthEvt)
	rn.healthEvt = make(chan struct{})
	rn.evtMu.Unlock()
	rn.signal()
}

// trigger calls the agent, under ctx: the calls' context (rn.callCtx) or
// a delivery span's context derived from it.
func (rn *runner) trigger(ctx context.Context, ev agentapi.Event) Outcome {
	if rn.order != nil {
		var cancel context.CancelFunc
		ctx, cancel = rn.order.callContext(ctx)
		defer cancel()
		end, err := rn.order.callSlot(ctx)
		if err != nil {
			return Outcome{Class: agentapi.ClassCanceled, Err: err}
		}
		defer end()
	}
	ctx, span := rn.tracing.startCall(ctx)
	t0 := time.Now()
	status, err := rn.route.Agent.Trigger(ctx, ev)
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

// maxTrackedFailures bounds the failure counts a runner keeps; past it they
// are forgotten (backoff restarts short, which errs on the side of speed).
const maxTrackedFailures = 100_000

// failed counts one more failure of the message's own and returns the count.
func (rn *runner) failed(seq uint64) int {
	rn.failMu.Lock()
	defer rn.failMu.Unlock()
	if len(rn.failures) >= maxTrackedFailures {
		clear(rn.failures)
	}
	rn.failures[seq]++
	return rn.failures[seq]
}

// forget drops a settled message's failure count.
func (rn *runner) forget(seq uint64) {
	rn.failMu.Lock()
	delete(rn.failures, seq)
	rn.failMu.Unlock()
}

// settle carries out the action. A dead letter is only terminated after
// JetStream acknowledged its copy; when that fails the original is kept and
// retried: naked with a delay, or, on an ordered route, held (settle then
// reports held, and the caller tries again).
func (rn *runner) settle(d delivery, out Outcome, act Action, jitter float64) (held bool) {
	msg := d.msg
	level := slog.LevelInfo
	logMsg := "retrying"
	var settleErr error
	switch act.Verdict {
	case verdict.Ack:
		level, logMsg = rn.accepted(d), "accepted"
		rn.forget(d.md.Sequence.Stream)
		if settleErr = msg.Ack(); settleErr != nil {
			rn.m.SettleFailed("ack")
		}
	case verdict.Retry:
		if out.RouteWide || out.Class == ClassGated || out.Class == agentapi.ClassCanceled {
			level = slog.LevelDebug
		}
		if act.Delay > 0 {
			if settleErr = rn.nakDelayed(msg, act.Delay); settleErr != nil {
				rn.m.SettleFailed("nak")
			}
		} else {
			rn.giveBack(msg)
		}
	case verdict.DeadLetter:
		ctx, cancel := context.WithTimeout(context.Background(), rn.relay.opts.DeadLetter.PublishTimeout)
		f := deadletter.Facts{
			Reason: string(act.Reason), Class: string(out.Class), Status: out.Status,
			Route: rn.route.Name, TriggerID: rn.route.Agent.ID().String(),
			Attempts: d.attempts.Delivered, IdempotencyKey: d.key, OrderedKey: d.ordered,
		}
		if out.Err != nil {
			f.Error = out.Err.Error()
		}
		if d.hasNext {
			f.NextSeq = d.next
		}
		stored, err := rn.relay.dl.Publish(ctx, msg, d.md, f)
		cancel()
		if err != nil {
			rn.m.DeadLetterFailed()
			act = Action{Verdict: verdict.Retry, Delay: Backoff(rn.route.Retry, d.attempts.Failed, 0, jitter), Reason: act.Reason}
			level, logMsg = slog.LevelError, "dead-letter publish failed; keeping the message and retrying"
			out.Err = fmt.Errorf("%w (dead-letter publish: %w)", out.Err, err)
			if rn.order != nil {
				held = true
				logMsg = "dead-letter publish failed; holding the ordered event and retrying"
				break
			}
			if settleErr = rn.nakDelayed(msg, act.Delay); settleErr != nil {
				rn.m.SettleFailed("nak")
			}
			break
		}
		rn.forget(d.md.Sequence.Stream)
		level, logMsg = slog.LevelWarn, "dead-lettered"
		if stored.Form != deadletter.FormFull {
			// Sized down to what the server stores: say what is missing.
			rn.log.Warn("dead letter stored in a smaller form", "stream_seq", d.md.Sequence.Stream, "form", string(stored.Form),
				"body_omitted", stored.BodyOmitted, "dropped_headers", stored.DroppedHeaders, "refusal", errString(stored.Refusal))
		}
		rn.m.DeadLettered(string(act.Reason))
		if settleErr = msg.TermWithReason(string(act.Reason)); settleErr != nil {
			// The copy is stored; a redelivery publishes it again under
			// the same dead-letter message id and JetStream drops the
			// duplicate.
			rn.m.SettleFailed("term")
		}
	}
	rn.m.Finished(act.Verdict, string(out.Class), d.attempts.Delivered, time.Since(d.start).Seconds())
	if held {
		d.span.event("dead-letter publish failed; holding the ordered event", out)
	} else {
		d.span.settled(d, out, act, settleErr)
	}
	if settleErr != nil {
		level = max(level, slog.LevelWarn)
	}
	if rn.log.Enabled(context.Background(), level) {
		rn.logSettled(level, logMsg, d, out, act, settleErr)
	}
	return held
}

func (rn *runner) logSettled(level slog.Level, logMsg string, d delivery, out Outcome, act Action, settleErr error) {
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.Uint64("stream_seq", d.md.Sequence.Stream),
		slog.Int("attempt", d.attempts.Delivered),
		slog.String("idempotency_key", d.key),
		slog.String("class", string(out.Class)),
		slog.Duration("latency", time.Since(d.start)),
	)
	if d.attempts.Failed > 0 {
		attrs = append(attrs, slog.Int("failures", d.attempts.Failed))
	}
	if out.RouteWide {
		attrs = append(attrs, slog.Bool("route_wide", true))
	}
	if out.Status != 0 {
		attrs = append(attrs, slog.Int("status", out.Status))
	}
	switch act.Verdict {
	case verdict.Retry:
		attrs = append(attrs, slog.Duration("delay", act.Delay))
	case verdict.DeadLetter:
		attrs = append(attrs, slog.String("reason", string(act.Reason)))
	}
	if out.Err != nil {
		attrs = append(attrs, slog.String("err", out.Err.Error()))
	}
	if settleErr != nil {
		attrs = append(attrs, slog.String("settle_err", settleErr.Error()))
	}
	rn.log.LogAttrs(context.Background(), level, logMsg, attrs...)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
