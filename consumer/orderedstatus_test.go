package consumer

import (
	"math"
	"testing"
	"time"
)

// blockedKeys names each key whose next event waits: how many wait, the
// oldest of them, and the event they wait behind. A key with nothing
// waiting (its one event running) is not blocked.
func TestSequencerBlockedKeys(t *testing.T) {
	s := unfenced()
	t0 := time.Unix(1000, 0)
	s.add(1, "a", uint64(1), t0)
	s.add(2, "b", uint64(2), t0.Add(time.Second))
	s.add(3, "a", uint64(3), t0.Add(2*time.Second))
	s.add(4, "a", uint64(4), t0.Add(3*time.Second))
	s.ready(math.MaxInt) // 1 (a) and 2 (b) run
	got := map[string]BlockedKey{}
	for _, b := range s.blockedKeys() {
		got[b.Key] = b
	}
	if len(got) != 1 {
		t.Fatalf("blocked keys %v, want only a", got)
	}
	if a := got["a"]; a.Waiting != 2 || a.OldestSeq != 3 || !a.Since.Equal(t0.Add(2*time.Second)) || a.BehindSeq != 1 {
		t.Errorf("a = %+v, want 2 waiting, the oldest 3 (since t0+2s), behind 1", a)
	}
	// Fenced, nothing runs: every held key is blocked, behind nothing.
	f := newSequencer()
	f.add(7, "c", uint64(7), t0)
	if b := f.blockedKeys(); len(b) != 1 || b[0].BehindSeq != 0 || b[0].OldestSeq != 7 {
		t.Errorf("fenced: %+v, want c blocked at 7 behind nothing", b)
	}
}
