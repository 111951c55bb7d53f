package consumer

import (
	"slices"
	"testing"
	"time"
)

// The sequencer's rules as a specification, without NATS. Messages are
// named by their consumer sequence; keys are letters.

func readySeqs(s *sequencer) []uint64 {
	var out []uint64
	for _, it := range s.ready() {
		out = append(out, it.(uint64))
	}
	return out
}

func addAll(s *sequencer, msgs ...any) {
	for i := 0; i < len(msgs); i += 2 {
		cseq := msgs[i].(uint64)
		s.add(cseq, msgs[i+1].(string), cseq, time.Time{})
	}
}

func unfenced() sequencer {
	s := newSequencer()
	s.observe(0, nil)
	return s
}

func TestSequencerOneAtATimePerKeyInOrder(t *testing.T) {
	s := unfenced()
	addAll(&s, uint64(1), "a", uint64(2), "b", uint64(3), "a", uint64(4), "", uint64(5), "b")
	if got := readySeqs(&s); !slices.Equal(got, []uint64{1, 2, 4}) {
		t.Fatalf("ready = %v, want the first of each key and the keyless one: [1 2 4]", got)
	}
	if got := readySeqs(&s); len(got) != 0 {
		t.Fatalf("ready again = %v, want nothing while they run", got)
	}
	s.settled(2)
	if got := readySeqs(&s); !slices.Equal(got, []uint64{5}) {
		t.Fatalf("after b's first settled: %v, want [5]", got)
	}
	s.settled(1)
	if got := readySeqs(&s); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("after a's first settled: %v, want [3]", got)
	}
	for _, c := range []uint64{3, 4, 5} {
		s.settled(c)
	}
	if len(s.held) != 0 || len(s.keys) != 0 {
		t.Errorf("all settled: held %d, keys %d; want 0, 0", len(s.held), len(s.keys))
	}
}

// A retry holds its key: the later event of the key waits, other keys go.
func TestSequencerARetryingEventHoldsOnlyItsKey(t *testing.T) {
	s := unfenced()
	addAll(&s, uint64(1), "a", uint64(2), "a", uint64(3), "b")
	readySeqs(&s) // 1 and 3 run; 1 is being retried in place
	s.settled(3)
	addAll(&s, uint64(4), "b", uint64(5), "a")
	if got := readySeqs(&s); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("ready = %v, want b's next only: [4]", got)
	}
	if keys, _ := s.blocked(); keys != 1 {
		t.Errorf("blocked keys = %d, want 1 (a)", keys)
	}
}

// A replica that gains the route holds what it receives (keyless messages
// aside) until every unsettled message of the consumer is in its hands;
// then each key goes in stream order, whatever order the messages came in
// (a redelivery of an earlier event may come after a later one).
func TestSequencerIsFencedUntilItHoldsEveryUnsettledMessage(t *testing.T) {
	s := newSequencer()
	addAll(&s, uint64(12), "a", uint64(13), "b", uint64(14), "")
	if got := readySeqs(&s); !slices.Equal(got, []uint64{14}) {
		t.Fatalf("ready = %v, want only the keyless message: [14]", got)
	}
	s.observe(4, s.holding()) // 11 is still with the previous owner
	if got := readySeqs(&s); len(got) != 0 {
		t.Fatalf("ready = %v with an unsettled message elsewhere", got)
	}
	addAll(&s, uint64(11), "a") // redelivered here
	s.observe(4, s.holding())
	if got := readySeqs(&s); !slices.Equal(got, []uint64{11, 13}) {
		t.Fatalf("ready = %v, want [11 13] (12 waits behind 11 of its key)", got)
	}
	s.settled(11)
	if got := readySeqs(&s); !slices.Equal(got, []uint64{12}) {
		t.Fatalf("ready = %v, want [12]", got)
	}
}

// The server's count and the replica's holding are compared as of the
// question: a message that arrives or is settled while it is asked does not
// lift the fence early.
func TestSequencerFenceComparesAsOfTheQuestion(t *testing.T) {
	s := newSequencer()
	addAll(&s, uint64(20), "", uint64(21), "a")
	before := s.holding()
	// Meanwhile: the keyless 20 is settled here (the server had counted it
	// or not), and 22 arrives (counted or not). Elsewhere: 19, unsettled.
	readySeqs(&s)
	s.settled(20)
	addAll(&s, uint64(22), "b")
	s.observe(2, before) // the server counts 19 and 21 (20's ack came first)
	if !s.fenced {
		t.Error("the fence was lifted while 19 is unsettled elsewhere")
	}
	s.observe(2, s.holding()) // 19 settled elsewhere: the server counts 21 and 22
	if s.fenced {
		t.Error("the fence stayed up with every unsettled message held here")
	}
}

// An event settled here whose ack was lost comes back while the next event
// of its key runs: it waits for it (two calls at once for one key are never
// made), and is then replayed (the API answers it from its record).
func TestSequencerARedeliveryOfASettledEventWaitsForTheRunningOne(t *testing.T) {
	s := unfenced()
	addAll(&s, uint64(1), "a")
	readySeqs(&s)
	s.settled(1)
	addAll(&s, uint64(2), "a")
	readySeqs(&s) // 2 runs
	addAll(&s, uint64(1), "a")
	if got := readySeqs(&s); len(got) != 0 {
		t.Fatalf("ready = %v while 2 of the key runs, want nothing", got)
	}
	s.settled(2)
	if got := readySeqs(&s); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("ready = %v, want [1]", got)
	}
}

func TestSequencerDropsDuplicates(t *testing.T) {
	s := unfenced()
	addAll(&s, uint64(6), "a")
	if !s.add(6, "a", nil, time.Time{}) {
		t.Error("a second delivery of a held message was taken")
	}
}

func TestSequencerReleaseHandsBackWhatIsNotRunningAndFences(t *testing.T) {
	s := unfenced()
	addAll(&s, uint64(1), "a", uint64(2), "a", uint64(3), "b")
	readySeqs(&s) // 1, 3 run
	got := s.release()
	if len(got) != 1 || got[0].(uint64) != 2 {
		t.Fatalf("released %v, want [2]", got)
	}
	if _, ok := s.next("a", 1); ok {
		t.Error("a released message is still next of its key")
	}
	addAll(&s, uint64(4), "c")
	if got := readySeqs(&s); len(got) != 0 {
		t.Errorf("ready = %v after losing the route, want nothing until fenced anew", got)
	}
}

func TestSequencerNextOfKeyAndOldestBlocked(t *testing.T) {
	s := unfenced()
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	s.add(1, "a", uint64(1), t0)
	s.add(2, "a", uint64(2), t0.Add(time.Second))
	s.add(3, "a", uint64(3), t0.Add(2*time.Second))
	readySeqs(&s)
	if n, ok := s.next("a", 1); !ok || n != 2 {
		t.Errorf("next of a after 1 = %d, %v; want 2", n, ok)
	}
	if keys, oldest := s.blocked(); keys != 1 || !oldest.Equal(t0.Add(time.Second)) {
		t.Errorf("blocked = %d, %v; want 1 key, oldest waiting since %v", keys, oldest, t0.Add(time.Second))
	}
}
