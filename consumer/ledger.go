package consumer

import (
	"sync"

	"github.com/agentrelay/agentrelay/agentapi"
)

// ledger is what this replica knows of each message's own history: how
// often its calls failed, and how. Route health asks it whether a message
// is fresh (has never failed here), so that a route-wide condition is only
// ever proven by messages that did not fail before; the retry policy asks
// it how many failures a message has had, for its backoff and budget.
//
// It is keyed by stream sequence and only sees this replica's calls: a
// message redelivered to another replica starts there afresh. The delivery
// cap (DeliveryCapFactor × MaxAttempts) bounds what that can cost.
type ledger struct {
	mu      sync.Mutex         // guards entries
	entries map[uint64]*record // by stream sequence
}

// record is one message's history on this replica.
type record struct {
	failed   bool // a call of it failed, whoever's failure it was
	unstored bool // its dead letter could not be stored
	own      int  // failures of its own: they count towards MaxAttempts
	timeouts int  // of those, calls that timed out
	last     agentapi.Class
}

// maxLedger bounds the records a ledger keeps; past it they are forgotten
// (backoff restarts short, and a forgotten message counts as fresh once
// more, which errs on the side of speed).
const maxLedger = 100_000

func newLedger() *ledger { return &ledger{entries: map[uint64]*record{}} }

// fresh reports whether no call of the message has failed on this replica.
func (l *ledger) fresh(seq uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.entries[seq]
	return r == nil || !r.failed
}

// failed records a failed call of the message, in its delivered-th
// delivery. own says whether the failure is the message's own (the route
// was healthy), ownTimeout whether a timeout is too (other messages' calls
// do not time out as well); it returns the message's own failures and own
// timeouts so far.
//
// A message's earlier deliveries may have failed on other replicas, which
// this ledger never saw: JetStream's delivery count says how many there
// were, so a message failing on its own is taken to have failed at each of
// them. Its budget then holds across replicas (a message alternating
// between two replicas would otherwise get twice its attempts). The count
// also holds deliveries that ended otherwise (a hand-back while the route
// was stopped, a replica's crash): it errs towards an earlier dead letter
// for a message that fails on its own after an outage, never towards
// retrying one for ever.
func (l *ledger) failed(seq uint64, class agentapi.Class, own, ownTimeout bool, delivered int) (failures, timeouts int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.entries[seq]
	if r == nil {
		if len(l.entries) >= maxLedger {
			clear(l.entries)
		}
		r = &record{}
		l.entries[seq] = r
	}
	r.failed, r.last = true, class
	if own {
		r.own = max(r.own+1, delivered)
		if class == agentapi.ClassTimeout && ownTimeout {
			r.timeouts++
		}
	}
	return r.own, r.timeouts
}

// counts returns the message's own failures and timeouts so far.
func (l *ledger) counts(seq uint64) (failures, timeouts int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.entries[seq]; r != nil {
		return r.own, r.timeouts
	}
	return 0, 0
}

// letterRefused records that the message's dead letter could not be
// stored, and reports whether that is the first time.
func (l *ledger) letterRefused(seq uint64) (first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.entries[seq]
	if r == nil {
		if len(l.entries) >= maxLedger {
			clear(l.entries)
		}
		r = &record{}
		l.entries[seq] = r
	}
	first, r.unstored = !r.unstored, true
	return first
}

// forget drops a settled message's record.
func (l *ledger) forget(seq uint64) {
	l.mu.Lock()
	delete(l.entries, seq)
	l.mu.Unlock()
}
