package consumer

import (
	"slices"
	"time"
)

// sequencer decides when a message of an ordered route may be handled, so
// that the events of one conversation key reach the agent one at a time and
// in stream order, across replicas.
//
// A message may be handled when no earlier message of its key is held here
// unsettled, and the sequencer is not fenced. A message without a key is
// not ordered and may be handled at once.
//
// The fence covers what this replica cannot see: messages delivered to
// another replica and not settled. One replica owns an ordered route at a
// time (a pinned priority group), but when the pin moves, the previous
// owner may still hold events (it is cut off, or being retried), or they
// wait for redelivery after it died. So a replica that gains the pin starts
// fenced, holding what it receives, until the consumer's count of
// unsettled messages is no more than it holds itself: then every
// outstanding message is here, and ordering them by stream sequence is
// enough. (JetStream gives a redelivered message a new consumer sequence,
// so only the stream sequence identifies a message.)
//
// sequencer does no I/O and reads no clock; the runner holds its lock.
type sequencer struct {
	fenced bool
	held   map[uint64]*sequence // by stream sequence
	keys   map[string][]uint64  // unsettled held messages of each key, ascending
}

// sequence is one held message of an ordered route.
type sequence struct {
	key     string
	since   time.Time // when it arrived
	running bool      // being handled
	item    any       // the caller's message
}

func newSequencer() sequencer {
	return sequencer{fenced: true, held: map[uint64]*sequence{}, keys: map[string][]uint64{}}
}

// add takes a delivered message. It reports dup for a message held already
// (a redelivery after its ack wait ran out): the caller keeps the first and
// drops the second.
func (s *sequencer) add(seq uint64, key string, item any, now time.Time) (dup bool) {
	if _, ok := s.held[seq]; ok {
		return true
	}
	s.held[seq] = &sequence{key: key, since: now, item: item}
	if key != "" {
		q := s.keys[key]
		i, _ := slices.BinarySearch(q, seq)
		s.keys[key] = slices.Insert(q, i, seq)
	}
	return false
}

// ready marks the messages that may be handled now as running and returns
// them, lowest sequence first. A key with a message running starts no
// other: not even an earlier one, which can only be a redelivery of an
// event settled here already (its ack was lost), replayed harmlessly once
// the running one is done.
func (s *sequencer) ready() []any {
	var seqs []uint64
	for seq, e := range s.held {
		if e.running {
			continue
		}
		if e.key == "" || (!s.fenced && s.keys[e.key][0] == seq && !s.keyRunning(e.key)) {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	out := make([]any, len(seqs))
	for i, seq := range seqs {
		s.held[seq].running = true
		out[i] = s.held[seq].item
	}
	return out
}

func (s *sequencer) keyRunning(key string) bool {
	for _, seq := range s.keys[key] {
		if s.held[seq].running {
			return true
		}
	}
	return false
}

// settled records a message as done (acked, terminated or handed back): the
// next of its key may go.
func (s *sequencer) settled(seq uint64) {
	e, ok := s.held[seq]
	if !ok {
		return
	}
	delete(s.held, seq)
	if e.key == "" {
		return
	}
	q := s.keys[e.key]
	if i, found := slices.BinarySearch(q, seq); found {
		q = slices.Delete(q, i, i+1)
	}
	if len(q) == 0 {
		delete(s.keys, e.key)
	} else {
		s.keys[e.key] = q
	}
}

// holding returns the stream sequences held now: take it before asking
// the server for its count, and pass it to observe.
func (s *sequencer) holding() []uint64 {
	out := make([]uint64, 0, len(s.held))
	for seq := range s.held {
		out = append(out, seq)
	}
	return out
}

// observe takes the consumer's count of unsettled messages as the server
// reported it after holding() gave before, and lifts the fence once this
// replica holds all of them. Only messages held both before the question
// and now count: one that arrived meanwhile may or may not be in the
// server's count, and one settled meanwhile may or may not be out of it.
func (s *sequencer) observe(ackPending int, before []uint64) {
	n := 0
	for _, seq := range before {
		if _, ok := s.held[seq]; ok {
			n++
		}
	}
	if s.fenced && ackPending <= n {
		s.fenced = false
	}
}

// next is the stream sequence of the next held message of key after seq,
// if any (for a dead letter: which event came next).
func (s *sequencer) next(key string, seq uint64) (uint64, bool) {
	for _, q := range s.keys[key] {
		if q > seq {
			return q, true
		}
	}
	return 0, false
}

// blocked counts the keys whose next message waits (behind a running or
// retrying one, or the fence), and the arrival of the oldest waiting one.
func (s *sequencer) blocked() (keys int, oldest time.Time) {
	for _, q := range s.keys {
		waiting := false
		for _, seq := range q {
			e := s.held[seq]
			if e.running {
				continue
			}
			waiting = true
			if oldest.IsZero() || e.since.Before(oldest) {
				oldest = e.since
			}
		}
		if waiting {
			keys++
		}
	}
	return keys, oldest
}

// release drops every message that is not running and returns them, to be
// handed back (the route lost its pin, or is draining), and fences: until
// this replica owns the route again and holds every unsettled message.
// Running ones are handed back by their handlers.
func (s *sequencer) release() []any {
	s.fenced = true
	var out []any
	for seq, e := range s.held {
		if !e.running {
			out = append(out, e.item)
			s.settled(seq)
		}
	}
	return out
}
