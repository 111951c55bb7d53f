package consumer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The sequencer's rules as a specification, without NATS. Messages are
// named by their consumer sequence; keys are letters.

func readySeqs(s *sequencer) []uint64 {
	var out []uint64
	for _, it := range s.ready(math.MaxInt) {
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
	if len(s.held) != 0 || len(s.keys) != 0 || s.running != 0 {
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

// A message whose ack is on its way no longer stands for a held message:
// the server may have taken the ack before it answered (here: it counts 19,
// elsewhere, and 21), while the replica has not yet recorded 20 as settled.
func TestSequencerFenceDoesNotCountAMessageBeingSettled(t *testing.T) {
	s := newSequencer()
	addAll(&s, uint64(20), "", uint64(21), "a")
	readySeqs(&s) // the keyless 20 runs while fenced
	s.settling(20, false)
	s.observe(2, s.holding())
	if !s.fenced {
		t.Error("the fence was lifted while 19 is unsettled elsewhere: 20, acked, was counted in its place")
	}
	s.settled(20)
	s.observe(1, s.holding())
	if s.fenced {
		t.Error("the fence stayed up with every unsettled message held here")
	}
}

// An event handed back (a drain, a lost pin, a canceled call) leaves its
// key; the key's next event does not start in its place, but waits until
// the event is held here again and has gone first.
func TestSequencerAHandedBackEventIsNotOvertakenByItsKeysNext(t *testing.T) {
	s := unfenced()
	addAll(&s, uint64(1), "a", uint64(2), "a", uint64(3), "b")
	readySeqs(&s) // 1 and 3 run
	s.settling(1, true)
	s.settled(1)
	if got := readySeqs(&s); len(got) != 0 {
		t.Fatalf("ready = %v after a's first went back, want nothing: 2 would overtake it", got)
	}
	s.observe(3, s.holding()) // the server counts 1 (on its way back), 2 and 3
	if got := readySeqs(&s); len(got) != 0 {
		t.Fatalf("ready = %v with 1 not yet back, want nothing", got)
	}
	addAll(&s, uint64(1), "a") // redelivered
	s.observe(3, s.holding())
	if got := readySeqs(&s); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("ready = %v once 1 is back, want [1] (3 still runs)", got)
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

// An ordered route holds more than it runs: at most limit run at once, and
// a settle lets the lowest waiting one go.
func TestSequencerRunsAtMostTheLimit(t *testing.T) {
	s := unfenced()
	addAll(&s, uint64(1), "a", uint64(2), "b", uint64(3), "c", uint64(4), "a", uint64(5), "")
	var got []uint64
	for _, it := range s.ready(2) {
		got = append(got, it.(uint64))
	}
	if !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("ready(2) = %v, want [1 2]", got)
	}
	if more := s.ready(2); len(more) != 0 {
		t.Fatalf("ready(2) with 2 running = %v, want nothing", more)
	}
	s.settled(1)
	got = got[:0]
	for _, it := range s.ready(2) {
		got = append(got, it.(uint64))
	}
	if !slices.Equal(got, []uint64{3}) {
		t.Fatalf("after 1 settled: ready(2) = %v, want [3] (the lowest that may go; 4 is next of a but higher)", got)
	}
}

// Many keys, settled in any order: every message runs exactly once, never
// two of one key at once, each key in stream order, never more than the
// limit at once. (The sequencer keeps candidates in a heap with stale
// entries; this checks that none is lost or run twice.)
func TestSequencerManyKeysAgainstAModel(t *testing.T) {
	s := unfenced()
	const n, keys, limit = 3000, 37, 16
	rnd := rand.New(rand.NewPCG(1, 2))
	var running []uint64
	lastOfKey := map[string]uint64{}
	started := map[uint64]bool{}
	keyOf := func(seq uint64) string {
		if seq%11 == 0 {
			return ""
		}
		return fmt.Sprint("k", seq%keys)
	}
	next := uint64(1)
	for len(started) < n {
		for i := rnd.IntN(8); i > 0 && next <= n; i-- {
			s.add(next, keyOf(next), next, time.Time{})
			next++
		}
		for _, it := range s.ready(limit) {
			seq := it.(uint64)
			if started[seq] {
				t.Fatalf("%d started twice", seq)
			}
			started[seq] = true
			if k := keyOf(seq); k != "" {
				if seq < lastOfKey[k] {
					t.Fatalf("%d of %s started after %d", seq, k, lastOfKey[k])
				}
				for _, r := range running {
					if keyOf(r) == k {
						t.Fatalf("%d and %d of %s run at once", r, seq, k)
					}
				}
				lastOfKey[k] = seq
			}
			running = append(running, seq)
		}
		if len(running) > limit {
			t.Fatalf("%d running, limit %d", len(running), limit)
		}
		if len(running) > 0 {
			i := rnd.IntN(len(running))
			s.settled(running[i])
			running = slices.Delete(running, i, i+1)
		} else if next > n {
			t.Fatalf("stuck: %d of %d started, nothing running", len(started), n)
		}
	}
	if len(s.candidates) > 2*len(s.held)+64+1 {
		t.Errorf("%d candidates for %d held: stale entries are not dropped", len(s.candidates), len(s.held))
	}
}
