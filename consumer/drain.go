package consumer

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// giveBack returns a message to the stream at once (a nak without delay),
// for another replica. During a drain the nak waits until this replica's own
// pulls have ended: JetStream would otherwise redeliver the message straight
// into one of them, and every round trip would burn a delivery attempt.
func (rn *runner) giveBack(msg inbound) {
	if rn.draining.Load() {
		rn.mu.Lock()
		held := !rn.handedBack
		if held {
			rn.handBack = append(rn.handBack, msg)
		}
		rn.mu.Unlock()
		if held {
			return
		}
		// The drain is over (a call that outlived it, a straggling
		// delivery): no pull of ours is left to loop into.
	}
	if err := msg.Nak(); err != nil {
		rn.m.SettleFailed("nak")
	}
}

// flushHandBack naks the messages held back during a drain; later ones are
// naked at once.
func (rn *runner) flushHandBack() {
	rn.mu.Lock()
	msgs := rn.handBack
	rn.handBack = nil
	rn.handedBack = true
	rn.mu.Unlock()
	for _, m := range msgs {
		if err := m.Nak(); err != nil {
			rn.m.SettleFailed("nak")
		}
	}
	if len(msgs) > 0 {
		rn.log.Info("handed messages back for other replicas", "count", len(msgs))
	}
}

// drain waits until no message is in flight, or until deadline; then it
// cancels the calls still running (they end as canceled and their messages
// are handed back at once) and waits for that. Then it drains the
// subscription: the unsubscribe tells the server to stop serving this
// replica's outstanding pulls, and whatever it sent before that is handled
// (held for hand-back) before the subscription closes. So a drain with
// nothing in flight takes one round trip, not the rest of a pull's expiry.
// Last, it hands back what arrived meanwhile and lets the idle handler
// goroutines go.
// handBackAhead hands back the messages waiting for a slot: a drain starts
// nothing new.
func (rn *runner) handBackAhead() {
	rn.mu.Lock()
	ahead := rn.ahead
	rn.ahead = nil
	rn.slots.dropAhead()
	rn.mu.Unlock()
	for _, a := range ahead {
		a.ka.stop()
		rn.m.Received()
		rn.m.Finished(verdict.Retry, string(agentapi.ClassCanceled), 0, 0)
		rn.giveBack(a.msg)
	}
}

func (rn *runner) drain(deadline time.Time) {
	if !rn.waitIdle(deadline) {
		rn.mu.Lock()
		left := rn.slots.active
		rn.mu.Unlock()
		rn.log.Warn("drain grace period over: canceling in-flight calls and handing their messages back", "in_flight", left)
		rn.cancelCalls()
		if !rn.waitIdle(time.Now().Add(5 * time.Second)) {
			rn.log.Error("messages still in flight after cancel; JetStream redelivers them after AckWait")
		}
	}
	rn.cancelCalls()
	rn.p.stop(2 * time.Second)
	rn.flushHandBack()
	rn.quitOnce.Do(func() { close(rn.quit) })
}

func (rn *runner) waitIdle(deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rn.mu.Lock()
		idle := rn.slots.active == 0
		rn.mu.Unlock()
		if idle {
			return true
		}
		select {
		case <-rn.wake:
		case <-tick.C:
		case <-t.C:
			return false
		}
	}
}
