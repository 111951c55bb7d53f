package consumer

import (
	"container/heap"
	"slices"
	"time"
)

// sequencer decides when a message of an ordered route may be handled, so
// that the events of one conversation key reach the agent one at a time and
// in stream order, across replicas.
//
// A message may be handled when no earlier message of its key is held here
// unsettled, no message of its key runs, and the sequencer is not fenced. A
// message without a key is not ordered and may be handled at once. At most
// a given number run at once (the route's max_in_flight): an ordered route
// holds more messages than it runs, so that a key busy with one event does
// not keep a slot of another key waiting.
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
// Every operation costs O(log n) in the messages held, except blocked,
// which is for metrics. sequencer does no I/O and reads no clock; the
// runner holds its lock.
type sequencer struct {
	fenced  bool
	held    map[uint64]*sequence // by stream sequence
	keys    map[string]*conv     // the unsettled held messages of each key
	running int                  // messages being handled
	// candidates holds the stream sequences that may have become ready,
	// lowest first. An entry is checked when taken (a message may have
	// been settled or started since), so every change that can make a
	// message ready pushes it again, and stale entries are dropped.
	candidates seqHeap
}

// sequence is one held message of an ordered route.
type sequence struct {
	key      string
	since    time.Time // when it arrived
	running  bool      // being handled
	settling bool      // its ack, term or hand-back is on its way to the server
	item     any       // the caller's message
}

// conv is one conversation key's held messages.
type conv struct {
	seqs    []uint64 // unsettled, ascending
	running int      // how many of them run (more than one never starts; see ready)
}

func newSequencer() sequencer {
	return sequencer{fenced: true, held: map[uint64]*sequence{}, keys: map[string]*conv{}}
}

// add takes a delivered message. It reports dup for a message held already
// (a redelivery after its ack wait ran out): the caller keeps the first and
// drops the second.
func (s *sequencer) add(seq uint64, key string, item any, now time.Time) (dup bool) {
	if _, ok := s.held[seq]; ok {
		return true
	}
	s.held[seq] = &sequence{key: key, since: now, item: item}
	if key == "" {
		s.push(seq)
		return false
	}
	c := s.keys[key]
	if c == nil {
		c = &conv{}
		s.keys[key] = c
	}
	i, _ := slices.BinarySearch(c.seqs, seq)
	c.seqs = slices.Insert(c.seqs, i, seq)
	if i == 0 && c.running == 0 {
		s.push(seq)
	}
	return false
}

// ready marks the messages that may be handled now as running, as many as
// keep the running ones at most limit, and returns them, lowest sequence
// first. A key with a message running starts no other: not even an earlier
// one, which can only be a redelivery of an event settled here already (its
// ack was lost), replayed harmlessly once the running one is done.
func (s *sequencer) ready(limit int) []any {
	var out []any
	for len(s.candidates) > 0 && s.running < limit {
		seq := s.candidates[0]
		if !s.mayStart(seq) {
			heap.Pop(&s.candidates)
			continue
		}
		heap.Pop(&s.candidates)
		e := s.held[seq]
		e.running = true
		s.running++
		if e.key != "" {
			s.keys[e.key].running++
		}
		out = append(out, e.item)
	}
	return out
}

func (s *sequencer) mayStart(seq uint64) bool {
	e, ok := s.held[seq]
	if !ok || e.running {
		return false
	}
	if e.key == "" {
		return true
	}
	c := s.keys[e.key]
	return !s.fenced && c.running == 0 && c.seqs[0] == seq
}

func (s *sequencer) push(seq uint64) {
	if len(s.candidates) > 2*len(s.held)+64 {
		s.rebuild() // stale entries outnumber the live ones
		return
	}
	heap.Push(&s.candidates, seq)
}

// rebuild makes the candidates anew from what is held.
func (s *sequencer) rebuild() {
	s.candidates = s.candidates[:0]
	for seq := range s.held {
		if s.mayStart(seq) {
			s.candidates = append(s.candidates, seq)
		}
	}
	heap.Init(&s.candidates)
}

// settling marks a held message whose settlement is about to be sent: the
// server may or may not count it as unsettled by the time it answers, so
// observe no longer counts it as held here. A message handed back (back)
// leaves its key: the sequencer fences, so that the key's next event cannot
// start before it is held here again and goes first.
func (s *sequencer) settling(seq uint64, back bool) {
	e, ok := s.held[seq]
	if !ok {
		return
	}
	e.settling = true
	if back && e.key != "" {
		s.fenced = true
	}
}

// settled records a message as done (acked, terminated or handed back): the
// next of its key may go.
func (s *sequencer) settled(seq uint64) {
	e, ok := s.held[seq]
	if !ok {
		return
	}
	delete(s.held, seq)
	if e.running {
		s.running--
	}
	if e.key == "" {
		return
	}
	c := s.keys[e.key]
	if e.running {
		c.running--
	}
	if i, found := slices.BinarySearch(c.seqs, seq); found {
		c.seqs = slices.Delete(c.seqs, i, i+1)
	}
	switch {
	case len(c.seqs) == 0:
		delete(s.keys, e.key)
	case c.running == 0:
		s.push(c.seqs[0])
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
// and now, and not being settled, count: one that arrived meanwhile may or
// may not be in the server's count, and one whose settlement was sent may
// or may not be out of it (counted, it would stand in for a message held
// elsewhere).
func (s *sequencer) observe(ackPending int, before []uint64) {
	n := 0
	for _, seq := range before {
		if e, ok := s.held[seq]; ok && !e.settling {
			n++
		}
	}
	if s.fenced && ackPending <= n {
		s.fenced = false
		s.rebuild()
	}
}

// next is the stream sequence of the next held message of key after seq,
// if any (for a dead letter: which event came next).
func (s *sequencer) next(key string, seq uint64) (uint64, bool) {
	c := s.keys[key]
	if c == nil {
		return 0, false
	}
	i, found := slices.BinarySearch(c.seqs, seq)
	if found {
		i++
	}
	if i < len(c.seqs) {
		return c.seqs[i], true
	}
	return 0, false
}

// blocked counts the keys whose next message waits (behind a running or
// retrying one, or the fence), and the arrival of the oldest waiting one.
func (s *sequencer) blocked() (keys int, oldest time.Time) {
	for _, c := range s.keys {
		waiting := false
		for _, seq := range c.seqs {
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
	s.candidates = s.candidates[:0]
	return out
}

// seqHeap is a min-heap of stream sequences (container/heap).
type seqHeap []uint64

func (h seqHeap) Len() int           { return len(h) }
func (h seqHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h seqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *seqHeap) Push(x any)        { *h = append(*h, x.(uint64)) }
func (h *seqHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
