package consumer

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

func (rn *runner) signal() {
	select {
	case rn.wake <- struct{}{}:
	default:
	}
}

// pull keeps the route's in-flight slots filled until stop is closed. It
// wakes when a slot frees, when route health changes, when a wait is over,
// and every heartbeat interval to check the outstanding requests.
func (rn *runner) pull(stop <-chan struct{}) {
	errDelay := 100 * time.Millisecond
	tick := time.NewTicker(rn.relay.opts.PullHeartbeat)
	defer tick.Stop()
	for {
		n, wait := rn.reserve(time.Now())
		if n > 0 {
			if err := rn.p.request(n); err != nil {
				rn.release(n)
				rn.m.PullFailed()
				rn.log.Debug("pull request failed", "err", err)
				if !sleep(stop, errDelay) {
					return
				}
				errDelay = min(2*errDelay, 5*time.Second)
				continue
			}
			errDelay = 100 * time.Millisecond
			continue
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case <-stop:
		case <-rn.wake:
		case <-timeout:
		case now := <-tick.C:
			rn.p.check(now)
		}
		if timer != nil {
			timer.Stop()
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

func sleep(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// reserve decides how many messages to ask for now, and books them as
// requested. When it returns 0 the loop waits for a slot to free, for route
// health to change, or for wait to pass.
func (rn *runner) reserve(now time.Time) (n int, wait time.Duration) {
	hs := rn.health.state(now)
	limit, lowMark := min(rn.limit, hs.Limit), rn.lowMark
	rn.m.SetInFlightLimit(limit)
	fenced := false
	if rn.order != nil {
		// An ordered route holds messages that make no call (waiting for
		// their key, or for the fence): its slots are what it holds, up to
		// the consumer's MaxAckPending; max_in_flight and AIMD limit its
		// calls (ordered.readyLocked, callSlot). And a fenced one must be able to
		// take in every unsettled message, so it pulls even while route
		// health has it stopped (the consumer's pause holds deliveries back
		// meanwhile).
		limit, lowMark = rn.route.MaxAckPending, max(1, rn.route.MaxAckPending/4)
		fenced = rn.order.isFenced()
	}
	if hs.Condition != ConditionNone && !fenced {
		// A route-wide condition: pull nothing, so messages left in the
		// stream spend no delivery attempt. A held message probes; only
		// when none is held is one pulled to probe with, when it is time.
		if rn.holding.Load() || hs.Probing {
			return 0, 0
		}
		if w := hs.NextProbe.Sub(now); w > 0 {
			return 0, w
		}
		limit, lowMark = 1, 1
	}
	lookahead := rn.lookahead
	if hs.Condition != ConditionNone || rn.order != nil {
		lookahead = 0 // a stopped route asks for its probe only; an ordered one holds what it gets anyway
	}
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.draining.Load() {
		return 0, 0
	}
	n, wait = rn.slots.free(now, limit, lowMark, lookahead)
	rn.slots.book(n)
	return n, wait
}

// delivered takes a message the puller received: its slot moves from
// requested to active and it goes to a handler, or, during a drain, it is
// held to be handed back.
func (rn *runner) delivered(msg *pulledMsg) {
	rn.mu.Lock()
	draining := rn.draining.Load()
	waits := rn.slots.delivered(time.Now(), !draining)
	if waits {
		// Every slot is taken: it waits here, kept alive, for the next
		// one to free (see done).
		rn.ahead = append(rn.ahead, aheadMsg{msg, rn.alive.add(msg)})
	}
	rn.mu.Unlock()
	if waits {
		return
	}
	if draining {
		rn.m.Received()
		rn.m.Finished(verdict.Retry, string(agentapi.ClassCanceled), 0, 0)
		rn.giveBack(msg)
		rn.signal()
		return
	}
	if rn.order != nil {
		rn.order.deliver(msg) // in flight once it starts
		return
	}
	rn.m.InFlight(1)
	rn.dispatch(msg)
}

// release gives back requested slots a pull request did not fill.
func (rn *runner) release(n int) {
	rn.mu.Lock()
	rn.slots.release(n)
	rn.mu.Unlock()
	rn.signal()
}

// sent records a pull request for n booked messages; it returns the
// request's reply token.
func (rn *runner) sent(n int, reconnects uint64) uint64 {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.slots.sent(n, time.Now(), reconnects)
}

// unsent forgets a request that could not be sent (its booking is released
// by the pull loop).
func (rn *runner) unsent(token uint64) {
	rn.mu.Lock()
	rn.slots.unsent(token)
	rn.mu.Unlock()
}

// ended applies a status of the request with token.
func (rn *runner) ended(token uint64, st pullStatus, pending int) (released int, reset bool) {
	rn.mu.Lock()
	released, reset = rn.slots.ended(token, st, pending, time.Now())
	rn.mu.Unlock()
	rn.signal()
	return released, reset
}

// check resets the accounting when the outstanding requests may have been
// lost, and says why.
func (rn *runner) check(now time.Time, reconnects uint64) string {
	rn.mu.Lock()
	why := rn.slots.check(now, reconnects)
	rn.mu.Unlock()
	if why != "" {
		rn.signal()
	}
	return why
}

// done frees the slot of a settled message that was in flight.
func (rn *runner) done() {
	rn.m.InFlight(-1)
	rn.free()
}

// free frees the slot of a message that is settled or handed back, and
// fills it from the look-ahead.
func (rn *runner) free() {
	rn.mu.Lock()
	var next aheadMsg
	if rn.slots.done() && len(rn.ahead) > 0 {
		next, rn.ahead = rn.ahead[0], rn.ahead[1:]
	}
	rn.mu.Unlock()
	if next.msg != nil {
		next.ka.stop()
		rn.m.InFlight(1)
		rn.dispatch(next.msg)
	}
	rn.signal()
}
