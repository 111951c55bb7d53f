package consumer

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// This file holds how an engine gives messages back and drains: a drain
// stops pulling, lets the calls in flight finish within the grace period,
// cancels the rest, and hands every message it holds back to the stream at
// once, for another replica.

// giveBack returns a message to the stream at once (a nak without delay),
// for another replica. During a drain the nak waits until this replica's own
// pulls have ended: JetStream would otherwise redeliver the message straight
// into one of them, and every round trip would burn a delivery attempt.
func (e *engine) giveBack(msg inbound) {
	e.mu.Lock()
	held := e.draining && !e.handedBack
	if held {
		e.handBack = append(e.handBack, msg)
	}
	e.mu.Unlock()
	if held {
		return
	}
	// Not draining, or the drain is over (a call that outlived it, a
	// straggling delivery): no pull of ours is left to loop into.
	if err := msg.Nak(); err != nil {
		e.m.SettleFailed("nak")
	}
}

// startDrain stops pulling and hands back the messages waiting for a slot:
// a drain starts nothing new.
func (e *engine) startDrain() {
	e.mu.Lock()
	e.draining = true
	ahead := e.ahead
	e.ahead = nil
	e.slots.dropAhead()
	e.mu.Unlock()
	for _, a := range ahead {
		a.ka.stop()
		e.handBackUnhandled(a.msg)
	}
}

// handBackUnhandled gives back a message no handler took up (it waited for
// a slot, or, on an ordered route, for its key), recorded as received and
// finished like any other: every settled message is finished exactly once.
func (e *engine) handBackUnhandled(msg inbound) {
	e.m.Received()
	e.m.Finished(verdict.Retry, string(agentapi.ClassCanceled), 0, 0)
	e.giveBack(msg)
}

// leave forgets a message that is not handled here, without settling it:
// JetStream redelivers it after its ack wait.
func (e *engine) leave(inbound) {
	e.m.Received()
	e.m.Finished(verdict.Retry, string(agentapi.ClassCanceled), 0, 0)
}

// drain waits until no message is in flight, or until deadline; then it
// cancels the calls still running (cancelCalls: they end as canceled and
// their messages are handed back at once) and waits for that. Then it
// drains the subscription: the unsubscribe tells the server to stop serving
// this replica's outstanding pulls, and whatever it sent before that is
// handled (held for hand-back) before the subscription closes. So a drain
// with nothing in flight takes one round trip, not the rest of a pull's
// expiry. Last, it hands back what arrived meanwhile and lets the idle
// handler goroutines go.
func (e *engine) drain(deadline time.Time, cancelCalls func()) {
	if !e.waitIdle(deadline) {
		e.log.Warn("drain grace period over: canceling in-flight calls and handing their messages back", "in_flight", e.active())
		cancelCalls()
		if !e.waitIdle(time.Now().Add(5 * time.Second)) {
			e.log.Error("messages still in flight after cancel; JetStream redelivers them after AckWait")
		}
	}
	cancelCalls()
	e.p.stop(2 * time.Second)
	e.flushHandBack()
	e.handlers.quitOnce.Do(func() { close(e.handlers.quit) })
}

// flushHandBack naks the messages held back during a drain; later ones are
// naked at once.
func (e *engine) flushHandBack() {
	e.mu.Lock()
	msgs := e.handBack
	e.handBack = nil
	e.handedBack = true
	e.mu.Unlock()
	for _, m := range msgs {
		if err := m.Nak(); err != nil {
			e.m.SettleFailed("nak")
		}
	}
	if len(msgs) > 0 {
		e.log.Info("handed messages back for other replicas", "count", len(msgs))
	}
}

// waitIdle waits until no message holds a slot, or until deadline. The
// pull loop has stopped by then, so the wake signals are the drain's.
func (e *engine) waitIdle(deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if e.active() == 0 {
			return true
		}
		select {
		case <-e.wake:
		case <-tick.C:
		case <-t.C:
			return false
		}
	}
}
