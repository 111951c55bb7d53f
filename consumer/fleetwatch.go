package consumer

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
)

// What a replica learns of the other replicas' pauses and resumes: from
// the server's pause advisories as they happen, and from its own reads of
// the consumer (observe.go), with the ack floor they carry. The state it
// keeps is fleetGate's (fleet.go), under fleetGate.mu.

// observe takes the consumer's pause state as read from the server, or as
// a pause advisory said; resumed says it was an advisory of a resume (the
// deadline cleared, as only a resume clears it; a lapse keeps it). A
// replica that is stopped and learns that route health's pause was resumed
// resumes too: only a probe that got through resumes it (or an operator),
// and the first success anywhere resumes the route everywhere, whether or
// not this replica holds a message to probe with. Only an advisory says
// so: advisories come in the server's order, while a read answered before
// the pause began may be taken in after its advisory. One that sees the
// pause end otherwise probes at once. An operator's pause stops the
// route's calls and probes until it ends.
//
// The server has no compare-and-set for a pause: this replica's extension
// of its pause, decided on a read of the consumer just before an operator
// paused it, lands after and replaces the operator's pause. Seen replacing
// an operator's pause that neither ended nor was resumed, route health's
// pause is undone: the operator's is put back.
func (f *fleetGate) observe(paused bool, until time.Time, resumed bool) {
	operator := paused && !isAutoPause(until)
	now := time.Now()
	resumedByProbe := false
	f.mu.Lock()
	switch {
	case operator:
		f.by, f.operator, f.until = PausedByOperator, until, time.Time{}
	case paused && f.operator.After(now):
		op := f.operator
		f.restore, f.pending = op, true
		f.mu.Unlock()
		f.rn.log.Warn("route health's pause replaced an operator's; putting the operator's back", "until", op)
		select {
		case f.kick <- struct{}{}:
		default:
		}
		return
	case paused:
		f.by, f.until = PausedByRouteHealth, until
	default:
		resumedByProbe = resumed && f.advised == PausedByRouteHealth
		f.by, f.operator, f.until = "", time.Time{}, time.Time{}
	}
	if paused && !operator {
		f.seen = true
		// Another replica's pause stops this one too; not this replica's
		// own, read back after its probe got through and before its
		// resume reached the server.
		adopt := !until.Equal(f.own) && !(f.pending && f.want.IsZero())
		f.mu.Unlock()
		f.rn.operatorPause(time.Time{})
		if adopt {
			f.rn.adopt(pauseCondition(until))
		}
		return
	}
	resumedElsewhere := f.seen && !paused
	f.seen = false
	f.mu.Unlock()
	if operator {
		f.rn.operatorPause(until)
		return
	}
	f.rn.operatorPause(time.Time{})
	hs := f.rn.health.state(time.Now())
	switch {
	case resumedByProbe && hs.Condition.sharedByReplicas():
		f.rn.resumeSeen(hs.Since, "another replica's probe got through (it resumed the consumer)")
	case resumedElsewhere && hs.Condition != conditionNone:
		f.rn.health.probeNow(time.Now())
		f.rn.notify()
	}
}

// readTicket is the count of pause advisories taken in when a read of the
// consumer was sent.
type readTicket uint64

// beginRead marks a read of the consumer about to be sent.
func (f *fleetGate) beginRead() readTicket {
	f.mu.Lock()
	defer f.mu.Unlock()
	return readTicket(f.advisories)
}

// takeRead takes in the pause state and ack floor of a read begun at t.
// A read that a pause advisory overtook is dropped: the server may have
// answered it before the advisory's pause or resume, and the reader took
// it in after. Taken in as news, a read that says paused, answered between
// another replica's ack of its probe and its resume, stops this replica
// again after the advisory of the resume resumed it, with the floor
// already moved: stopped, on an idle route, until traffic came back. The
// next read, a moment later, tells the state as it is.
func (f *fleetGate) takeRead(t readTicket, paused bool, until time.Time, floor uint64) {
	f.news.Lock()
	defer f.news.Unlock()
	f.mu.Lock()
	overtaken := readTicket(f.advisories) != t
	f.mu.Unlock()
	if overtaken {
		return
	}
	f.observe(paused, until, false)
	f.progress(paused, floor)
}

// progress takes the consumer's ack floor and pause state, read while this
// replica is stopped. A floor that moved on since the consumer was first
// read paused, with the consumer running again, means that other replicas'
// events are accepted: the condition is over, and this replica resumes
// too. Its probe would say the same, but it may have no message to probe
// with: on an idle route the one whose probe got through takes the
// backlog, and the others would stay stopped, their alerts firing, for
// ever, when the pause had lapsed before (nothing to resume, so no
// advisory). The first read paused, not the last: a probe that got
// through while the consumer was paused acks its message before it
// resumes the consumer. (A dead letter stored by another replica also moves the floor;
// a resume it causes by mistake costs a failed call, and the next pause.)
func (f *fleetGate) progress(paused bool, floor uint64) {
	hs := f.rn.health.state(time.Now())
	if !hs.Condition.sharedByReplicas() {
		return
	}
	f.mu.Lock()
	if paused {
		if !f.pausedSince.Equal(hs.Since) {
			f.pausedFloor, f.pausedSince = floor, hs.Since
		}
		f.mu.Unlock()
		return
	}
	moved := f.pausedSince.Equal(hs.Since) && floor > f.pausedFloor
	f.mu.Unlock()
	if moved {
		f.rn.resumeSeen(hs.Since, "other replicas' events are accepted again (the consumer's ack floor moved)")
	}
}

// advise counts an advisory (see takeRead) and records who holds the
// consumer paused as it said: the advisory that follows a pause says whose
// pause a resume ended. It keeps that until the next pause advisory, so
// that observe still knows it when the resume's advisory comes.
func (f *fleetGate) advise(paused bool, until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advisories++
	if !paused {
		return
	}
	f.advised = PausedByRouteHealth
	if !isAutoPause(until) {
		f.advised = PausedByOperator
	}
}

// pauseAdvisory is the server's advisory of a consumer's pause or resume
// (nats-server's JSConsumerPauseAdvisory), the fields read here.
type pauseAdvisory struct {
	Paused     bool      `json:"paused"`
	PauseUntil time.Time `json:"pause_until"`
}

// watchAdvisories subscribes to the consumer's pause advisories, so that a
// replica learns of a pause or a resume as it happens rather than at its
// next read of the consumer. The worker needs to subscribe to
// $JS.EVENT.ADVISORY.CONSUMER.PAUSE.> for it; without the permission the
// reads of the consumer still carry the news, later. It returns the
// function that unsubscribes, or nil.
func (f *fleetGate) watchAdvisories() func() {
	rt := f.rn.route
	nc := f.rn.relay.js.Conn()
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.PAUSE."+rt.Stream+"."+rt.Durable, func(m *nats.Msg) {
		var a pauseAdvisory
		if json.Unmarshal(m.Data, &a) != nil {
			return
		}
		paused := a.Paused && time.Now().Before(a.PauseUntil)
		until := time.Time{}
		if paused {
			until = a.PauseUntil
		}
		f.news.Lock()
		defer f.news.Unlock()
		f.advise(paused, until)
		f.observe(paused, until, !a.Paused && a.PauseUntil.IsZero())
	})
	if err != nil {
		f.rn.log.Debug("cannot watch the consumer's pause advisories", "err", err)
		return nil
	}
	return func() { _ = sub.Unsubscribe() }
}
