package consumer

import (
	"cmp"
	"slices"
	"time"

	"github.com/agentrelay/agentrelay/internal/routestatus"
)

// OrderedStatus is what one replica holds of an ordered route
// (routestatus.Ordered): `agentrelay status` learns from it which keys are
// blocked.
type OrderedStatus = routestatus.Ordered

// BlockedKey is a conversation key whose next event waits.
type BlockedKey = routestatus.BlockedKey

// MaxOrderedStatusKeys bounds the keys one OrderedStatus lists.
const MaxOrderedStatusKeys = routestatus.MaxBlockedKeys

// OrderedStatus returns what this replica holds of the ordered route named
// route, listing up to maxKeys blocked keys (at most MaxOrderedStatusKeys).
// It reports false for a route that is not ordered or not known.
func (r *Relay) OrderedStatus(route string, maxKeys int) (OrderedStatus, bool) {
	for _, rn := range r.runners {
		if rn.route.Name == route {
			if st := rn.policy.status(min(max(maxKeys, 0), MaxOrderedStatusKeys)); st != nil {
				return *st, true
			}
		}
	}
	return OrderedStatus{}, false
}

func (o *ordered) status(maxKeys int) *OrderedStatus {
	o.mu.Lock()
	st := OrderedStatus{Route: o.deps.route.Name, PinID: o.pin, Fenced: o.seq.fenced, Holding: len(o.seq.held), Running: o.seq.running}
	st.Blocked = o.seq.blockedKeys()
	o.mu.Unlock()
	st.BlockedKeys = len(st.Blocked)
	slices.SortFunc(st.Blocked, func(a, b BlockedKey) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return cmp.Compare(a.OldestSeq, b.OldestSeq)
	})
	st.Blocked = st.Blocked[:min(len(st.Blocked), maxKeys)]
	now := time.Now()
	for i, b := range st.Blocked {
		st.Blocked[i].WaitingSeconds = now.Sub(b.Since).Seconds()
		if b.BehindSeq != 0 {
			st.Blocked[i].BehindFailures = o.deps.failures(b.BehindSeq)
		}
	}
	return &st
}

// blockedKeys lists the keys whose next message waits, as blocked counts
// them, unsorted.
func (s *sequencer) blockedKeys() []BlockedKey {
	var out []BlockedKey
	for key, c := range s.keys {
		b := BlockedKey{Key: key}
		for _, seq := range c.seqs {
			e := s.held[seq]
			if e.running {
				b.BehindSeq = seq
				continue
			}
			b.Waiting++
			if b.OldestSeq == 0 || seq < b.OldestSeq {
				b.OldestSeq, b.Since = seq, e.since
			}
		}
		if b.Waiting > 0 {
			out = append(out, b)
		}
	}
	return out
}

// updateMetricsLocked tells metrics how many keys wait and for how long.
func (o *ordered) updateMetricsLocked() {
	keys, oldest := o.seq.blocked()
	age := 0.0
	if !oldest.IsZero() {
		age = time.Since(oldest).Seconds()
	}
	o.deps.m.OrderedBlocked(keys, age)
}
