package consumer

import (
	"cmp"
	"slices"
	"time"
)

// OrderedStatus is what one replica holds of an ordered route: whether it
// owns the route, and the conversation keys whose next event waits here.
// Only the owner holds events, and only in its memory: this is how
// `agentrelay status` learns which keys are blocked (see
// internal/app's ordered status service).
type OrderedStatus struct {
	Route string `json:"route"`
	// PinID is the pin this replica holds (the consumer's pinned client id
	// as the server last gave it): "" when it stands by.
	PinID string `json:"pin_id,omitempty"`
	// Fenced: this replica took the route over and waits until every
	// event the previous owner had is settled or redelivered here before
	// it starts any (every held key counts as blocked meanwhile).
	Fenced bool `json:"fenced"`
	// Holding counts the events held, Running those being handled
	// (called, or waiting out a retry in place).
	Holding int `json:"holding"`
	Running int `json:"running"`
	// BlockedKeys counts the keys whose next event waits; Blocked lists
	// the longest waiting of them, oldest first, at most as many as were
	// asked for.
	BlockedKeys int          `json:"blocked_keys"`
	Blocked     []BlockedKey `json:"blocked"`
}

// BlockedKey is a conversation key whose next event waits.
type BlockedKey struct {
	Key string `json:"key"`
	// Waiting counts the key's events that wait.
	Waiting int `json:"waiting"`
	// OldestSeq is the stream sequence of its oldest waiting event, and
	// Since when that event arrived at this replica.
	OldestSeq uint64    `json:"oldest_seq"`
	Since     time.Time `json:"since"`
	// WaitingSeconds is how long that event has waited, by the clock of
	// the replica (the reader's clock may differ).
	WaitingSeconds float64 `json:"waiting_seconds"`
	// BehindSeq is the stream sequence of the key's event being handled,
	// which the others wait behind (0 when none is: the route is fenced),
	// and BehindFailures its failures on this replica so far (a retry in
	// place).
	BehindSeq      uint64 `json:"behind_seq,omitempty"`
	BehindFailures int    `json:"behind_failures,omitempty"`
}

// MaxOrderedStatusKeys bounds the keys one OrderedStatus lists.
const MaxOrderedStatusKeys = 100

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
