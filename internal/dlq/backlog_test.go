package dlq

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// The backlog counts what the dead-letter stream holds, by route and
// reason, however the stream changes: letters added, replayed or purged
// from the middle, expired from the front. Unknown routes and reasons are
// "other", and it never reads more than its bound.
func TestBacklogFollowsTheStream(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := context.Background()
	cfg := deadletter.Config{}.WithDefaults()
	b := NewBacklog(n.JS, cfg, []string{"complaints", "refunds"}, 1000)
	if w, err := b.Refresh(ctx); err != nil || len(w.Letters) != 0 || !w.Complete {
		t.Fatalf("no stream yet: %+v %v", w, err)
	}
	if err := deadletter.NewWriter(n.JS, cfg).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	put := func(route, reason string) uint64 {
		h := nats.Header{}
		h.Set(deadletter.HeaderRoute, route)
		h.Set(deadletter.HeaderReason, reason)
		return n.Publish(t, &nats.Msg{Subject: cfg.Subject("agents.x"), Header: h, Data: []byte("{}")}).Sequence
	}
	want := func(step string, w Waiting, counts map[RouteReason]int) {
		t.Helper()
		if len(w.Letters) != len(counts) {
			t.Errorf("%s: %v, want %v", step, w.Letters, counts)
		}
		for k, c := range counts {
			if w.Letters[k] != c {
				t.Errorf("%s: %v = %d, want %d (all: %v)", step, k, w.Letters[k], c, w.Letters)
			}
		}
	}
	refresh := func() Waiting {
		t.Helper()
		w, err := b.Refresh(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}

	first := put("complaints", "forbidden")
	before := time.Now()
	put("complaints", "forbidden")
	mid := put("refunds", "max_attempts")
	put("elsewhere", "forbidden")
	put("refunds", "made_up")
	w := refresh()
	want("five letters", w, map[RouteReason]int{
		{"complaints", "forbidden"}: 2, {"refunds", "max_attempts"}: 1, {OtherLabel, "forbidden"}: 1, {"refunds", OtherLabel}: 1,
	})
	if o := w.Oldest["complaints"]; o.IsZero() || o.After(before) {
		t.Errorf("oldest complaints letter %v, want before %v", o, before)
	}

	put("refunds", "max_attempts") // appended: read incrementally
	want("one more", refresh(), map[RouteReason]int{
		{"complaints", "forbidden"}: 2, {"refunds", "max_attempts"}: 2, {OtherLabel, "forbidden"}: 1, {"refunds", OtherLabel}: 1,
	})

	st, err := n.JS.Stream(ctx, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, mid); err != nil { // replayed from the middle
		t.Fatal(err)
	}
	put("complaints", "forbidden") // and one added: the count alone stays the same
	want("one replayed, one added", refresh(), map[RouteReason]int{
		{"complaints", "forbidden"}: 3, {"refunds", "max_attempts"}: 1, {OtherLabel, "forbidden"}: 1, {"refunds", OtherLabel}: 1,
	})

	if err := st.DeleteMsg(ctx, first); err != nil { // gone from the front (max_age)
		t.Fatal(err)
	}
	w = refresh()
	want("the oldest gone", w, map[RouteReason]int{
		{"complaints", "forbidden"}: 2, {"refunds", "max_attempts"}: 1, {OtherLabel, "forbidden"}: 1, {"refunds", OtherLabel}: 1,
	})
	if !w.Oldest["complaints"].After(before) {
		t.Errorf("oldest complaints letter %v: the expired one still counts", w.Oldest["complaints"])
	}

	small := NewBacklog(n.JS, cfg, []string{"complaints", "refunds"}, 3)
	w, err = small.Refresh(ctx)
	total := 0
	for _, c := range w.Letters {
		total += c
	}
	if err != nil || w.Complete || total != 3 {
		t.Errorf("bounded to 3: %d read, complete %v, %v", total, w.Complete, err)
	}

	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if w := refresh(); len(w.Letters) != 0 || len(w.Oldest) != 0 {
		t.Errorf("after a purge: %+v", w)
	}
}
