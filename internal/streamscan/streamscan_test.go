package streamscan

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/testenv"
)

// streamOf makes stream S holding n messages on s.<i mod 2>, bodies
// "m<i>", and returns it with the time just before message mark (1-based)
// was published.
func streamOf(t *testing.T, n, mark int) (*testenv.NATS, jetstream.Stream, time.Time) {
	t.Helper()
	env := testenv.StartNATS(t)
	st := env.CreateStream(t, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	var at time.Time
	for i := 1; i <= n; i++ {
		if i == mark {
			time.Sleep(5 * time.Millisecond) // stored times have nanoseconds; keep them apart
			at = time.Now()
		}
		env.Publish(t, &nats.Msg{Subject: fmt.Sprintf("s.%d", i%2), Data: fmt.Appendf(nil, "m%d", i)})
	}
	return env, st, at
}

func seqs(t *testing.T, st jetstream.Stream, r Range) ([]uint64, Result) {
	t.Helper()
	var got []uint64
	res, err := Scan(context.Background(), st, r, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		got = append(got, md.Sequence.Stream)
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, res
}

func consumers(t *testing.T, st jetstream.Stream) int {
	t.Helper()
	n := 0
	for range st.ListConsumers(context.Background()).Info() {
		n++
	}
	return n
}

func TestScanReadsTheRangeAskedAndLeavesNoConsumer(t *testing.T) {
	_, st, at := streamOf(t, 20, 8)
	for _, tc := range []struct {
		name     string
		r        Range
		want     []uint64
		complete bool
	}{
		{"whole stream", Range{}, seqRange(1, 20), true},
		{"from a sequence to a sequence", Range{FromSeq: 5, ToSeq: 9}, seqRange(5, 9), true},
		{"from a time", Range{FromTime: at}, seqRange(8, 20), true},
		{"to a time", Range{ToTime: at}, seqRange(1, 7), true},
		{"limit", Range{FromSeq: 3, Limit: 4}, seqRange(3, 6), false},
		{"one subject", Range{Subjects: []string{"s.1"}, ToSeq: 10}, []uint64{1, 3, 5, 7, 9}, true},
		{"an empty range", Range{FromSeq: 9, ToSeq: 8}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, res := seqs(t, st, tc.r)
			if !slices.Equal(got, tc.want) || res.Complete != tc.complete || res.Scanned != len(tc.want) {
				t.Errorf("read %v (complete %v, %d scanned), want %v (complete %v)", got, res.Complete, res.Scanned, tc.want, tc.complete)
			}
			if len(got) > 0 && (res.FirstSeq != got[0] || res.LastSeq != got[len(got)-1] || res.FirstTime.IsZero() || res.LastTime.Before(res.FirstTime)) {
				t.Errorf("result %+v does not name the first and last messages read", res)
			}
			if n := consumers(t, st); n != 0 {
				t.Errorf("%d reading consumers left on the stream", n)
			}
		})
	}
}

func TestScanStopsWhenTheVisitorSaysSoAndCleansUp(t *testing.T) {
	_, st, _ := streamOf(t, 10, 0)
	var n int
	res, err := Scan(context.Background(), st, Range{HeadersOnly: true}, func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
		n++
		if len(m.Data()) != 0 {
			t.Errorf("headers only, yet a body of %d bytes", len(m.Data()))
		}
		return n < 3, nil
	})
	if err != nil || n != 3 || res.Complete {
		t.Errorf("visited %d (complete %v, err %v), want 3 and not complete", n, res.Complete, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Scan(ctx, st, Range{}, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) { return true, nil }); err == nil {
		t.Error("a scan with an ended context succeeded")
	}
	if c := consumers(t, st); c != 0 {
		t.Errorf("%d reading consumers left on the stream", c)
	}
}

func TestSeqAt(t *testing.T) {
	_, st, at := streamOf(t, 10, 4)
	for _, tc := range []struct {
		at   time.Time
		want uint64
	}{{at, 4}, {time.Time{}.Add(time.Hour), 1}, {time.Now().Add(time.Hour), 11}} {
		if got, err := SeqAt(context.Background(), st, nil, tc.at); err != nil || got != tc.want {
			t.Errorf("SeqAt(%v) = %d, %v; want %d", tc.at, got, err, tc.want)
		}
	}
}

// NewestFirst walks down from the end in doubling slices, covering every
// sequence once, and stops at the slice that finds what it looks for.
func TestNewestFirstSlices(t *testing.T) {
	var got []Slice
	low, err := NewestFirst(context.Background(), 1, 100, 10, func(_ context.Context, s Slice) (bool, error) {
		got = append(got, s)
		return false, nil
	})
	want := []Slice{{91, 100}, {71, 90}, {31, 70}, {1, 30}}
	if err != nil || low != 1 || !slices.Equal(got, want) {
		t.Errorf("slices %v (lowest %d, %v), want %v down to 1", got, low, err, want)
	}
	got = nil
	low, _ = NewestFirst(context.Background(), 1, 100, 10, func(_ context.Context, s Slice) (bool, error) {
		got = append(got, s)
		return s.From <= 80, nil
	})
	if low != 71 || len(got) != 2 {
		t.Errorf("stopped at %d after %v, want 71 after two slices", low, got)
	}
	if low, _ := NewestFirst(context.Background(), 5, 4, 10, nil); low != 5 {
		t.Errorf("an empty range covered down to %d", low)
	}
}

func seqRange(a, b uint64) []uint64 {
	var out []uint64
	for i := a; i <= b; i++ {
		out = append(out, i)
	}
	return out
}
