package consumer

import (
	"testing"
	"time"
)

// Slot accounting, without NATS: the pull engine's arithmetic as a table of
// steps. Each step acts on the slots and says what free() must then answer
// for a limit of 8 (low mark 2), and how many are requested and active.

func TestSlotAccounting(t *testing.T) {
	t.Parallel()
	type step struct {
		do        string
		act       func(s *slots, now time.Time)
		wantFree  int
		wantWait  bool
		requested int
		active    int
	}
	book := func(n int) func(*slots, time.Time) {
		return func(s *slots, now time.Time) { s.book(n); s.sent(n, now, 0, "") }
	}
	deliver := func(n int) func(*slots, time.Time) {
		return func(s *slots, now time.Time) {
			for range n {
				s.delivered(now, true)
			}
		}
	}
	done := func(n int) func(*slots, time.Time) {
		return func(s *slots, _ time.Time) {
			for range n {
				s.done()
			}
		}
	}
	status := func(token uint64, st pullStatus, pending int) func(*slots, time.Time) {
		return func(s *slots, now time.Time) { s.ended(token, st, pending, now) }
	}
	steps := []step{
		{"nothing yet: ask for every slot", func(*slots, time.Time) {}, 8, false, 0, 0},
		{"request 1 for 8 sent", book(8), 0, false, 8, 0},
		{"3 delivered", deliver(3), 0, false, 5, 3},
		{"1 settled: 1 free, under the low mark while a request is out", done(1), 0, false, 5, 2},
		{"2 more settled: 3 free", done(2), 3, false, 5, 0},
		{"request 2 for 3 sent", book(3), 0, false, 8, 0},
		{"request 1 expires with 5 unfilled (408)", status(1, statusEnded, 5), 5, false, 3, 0},
		{"a heartbeat changes nothing", status(2, statusHeartbeat, 0), 5, false, 3, 0},
		{"request 3 for 5 sent", book(5), 0, false, 8, 0},
		{"request 3 refused (409 max waiting): all 5 released, pulls wait", status(3, statusRefused, 0), 0, true, 3, 0},
		{"a leadership change: every request is gone", status(2, statusLost, 0), 0, true, 0, 0},
		{"a status of a forgotten request releases nothing", status(2, statusEnded, 3), 0, true, 0, 0},
	}
	s := newSlots(5*time.Second, time.Second)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, st := range steps {
		st.act(&s, now)
		n, wait := s.free(now, 8, 2, 0)
		if n != st.wantFree || (wait > 0) != st.wantWait || s.requested != st.requested || s.active != st.active {
			t.Fatalf("%s: free %d (wait %v), requested %d, active %d; want free %d (wait %v), requested %d, active %d",
				st.do, n, wait, s.requested, s.active, st.wantFree, st.wantWait, st.requested, st.active)
		}
	}
}

func TestSlotsRefusalsBackOffAndEvidenceResets(t *testing.T) {
	t.Parallel()
	s := newSlots(5*time.Second, time.Second)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	var waits []time.Duration
	for i := range 8 {
		s.book(1)
		tok := s.sent(1, now, 0, "")
		s.ended(tok, statusRefused, 0, now)
		_, w := s.free(now, 8, 2, 0)
		waits = append(waits, w)
		now = now.Add(w)
		if i == 7 && w != maxRefusedWait {
			t.Errorf("waits after refusals %v, want doubling from %v to %v", waits, minRefusedWait, maxRefusedWait)
		}
	}
	if waits[0] != minRefusedWait || waits[1] != 2*minRefusedWait {
		t.Errorf("waits after refusals %v, want doubling from %v", waits, minRefusedWait)
	}
	s.book(1)
	s.sent(1, now, 0, "")
	s.delivered(now, true) // a delivery is evidence that requests are served
	s.book(1)
	tok := s.sent(1, now, 0, "")
	s.ended(tok, statusRefused, 0, now)
	if _, w := s.free(now, 8, 2, 0); w != minRefusedWait {
		t.Errorf("wait after a refusal following a delivery = %v, want %v", w, minRefusedWait)
	}
}

func TestSlotsCheckResetsLostRequests(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		why        string
		after      time.Duration
		reconnects uint64
	}{
		{"reconnected", 100 * time.Millisecond, 1},
		{"no heartbeat", 2100 * time.Millisecond, 0},
		{"requests expired without a status", 7100 * time.Millisecond, 0},
	} {
		s := newSlots(5*time.Second, time.Second)
		s.book(4)
		s.sent(4, start, 0, "")
		if c.why == "requests expired without a status" {
			// heartbeats keep coming, but no ending status
			for d := time.Second; d < c.after; d += time.Second {
				s.ended(1, statusHeartbeat, 0, start.Add(d))
			}
		}
		if why := s.check(start.Add(c.after), c.reconnects); why != c.why || s.requested != 0 {
			t.Errorf("check after %v: %q (requested %d), want %q and a reset", c.after, why, s.requested, c.why)
		}
	}
	s := newSlots(5*time.Second, time.Second)
	s.book(4)
	s.sent(4, start, 0, "")
	if why := s.check(start.Add(1500*time.Millisecond), 0); why != "" || s.requested != 4 {
		t.Errorf("a live request was reset: %q", why)
	}
}

func TestStatusOfTurnsStatusMessagesIntoKinds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code, desc string
		want       pullStatus
	}{
		{"100", "Idle Heartbeat", statusHeartbeat},
		{"408", "Request Timeout", statusEnded},
		{"409", "Batch Completed", statusEnded},
		{"409", "Message Size Exceeds MaxBytes", statusEnded},
		{"409", "Leadership Change", statusLost},
		{"409", "Consumer Deleted", statusConsumerDeleted},
		{"503", "No Responders", statusNoResponders},
		{"409", "Exceeded MaxWaiting", statusRefused},
		{"400", "Bad Request", statusRefused},
		{"404", "No Messages", statusRefused},
	} {
		if got := statusOf(c.code, c.desc); got != c.want {
			t.Errorf("statusOf(%s %q) = %v, want %v", c.code, c.desc, got, c.want)
		}
	}
}

// Look-ahead: with every slot taken, up to lookahead more are asked for; a
// message that arrives before a slot frees waits for one, and takes the
// first that a settle frees, without a pull's round trip.
func TestSlotsLookAhead(t *testing.T) {
	s := newSlots(5*time.Second, time.Second)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	if n, _ := s.free(now, 4, 1, 2); n != 6 {
		t.Fatalf("free with nothing in flight = %d, want limit 4 + look-ahead 2", n)
	}
	s.book(6)
	s.sent(6, now, 0, "")
	var waiting int
	for range 6 {
		if s.delivered(now, true) {
			waiting++
		}
	}
	if s.active != 4 || waiting != 2 || s.ahead != 2 {
		t.Fatalf("active %d, waiting %d (ahead %d); want 4 handled and 2 waiting", s.active, waiting, s.ahead)
	}
	if n, _ := s.free(now, 4, 1, 2); n != 0 {
		t.Errorf("free = %d with slots and look-ahead all taken, want 0", n)
	}
	if !s.done() || s.active != 4 || s.ahead != 1 {
		t.Errorf("a settle did not hand its slot to a waiting message: active %d, ahead %d", s.active, s.ahead)
	}
	s.done()
	if s.done() || s.active != 3 {
		t.Errorf("with nothing waiting a settle frees its slot: active %d", s.active)
	}
	// A limit cut (AIMD) below what runs: nothing more starts until the
	// running ones come under it.
	s.free(now, 1, 1, 0)
	if s.delivered(now, true) != true {
		t.Error("a delivery above a cut limit started at once")
	}
}

// An ordered route's sequencer must see every message it holds: a delivery
// above the limit (a probe's limit of 1 while pulls for more were out) is
// taken, never left waiting ahead where it would start outside the
// sequencer's order.
func TestSlotsHoldAllLetsNothingWaitAhead(t *testing.T) {
	now := time.Unix(0, 0)
	s := newSlots(5*time.Second, time.Second)
	s.holdAll = true
	n, _ := s.free(now, 4, 1, 0)
	s.book(n)
	s.sent(n, now, 0, "")
	s.free(now, 1, 1, 0) // route health stops the route: a probe's limit
	for range n {
		if s.delivered(now, true) {
			t.Fatal("a delivery waits ahead of an ordered route's sequencer")
		}
	}
	if s.active != 4 || s.ahead != 0 {
		t.Errorf("active %d, ahead %d; want 4, 0", s.active, s.ahead)
	}
	if n, _ := s.free(now, 1, 1, 0); n != 0 {
		t.Errorf("free = %d above the limit, want 0", n)
	}
}
