package inspect

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// The finding's target, measured: an event 1 hour old in a stream of
// 1,000,000 messages is found in 2 s or less with a time hint, and in 30 s
// or less without one. Opt-in (it publishes a million messages, about a
// minute here): AGENTRELAY_SCALE=1 go test ./internal/inspect -run
// MillionMessages -v. The figures go to BENCHMARKS.md.
//
// The stream is the SRE drill's: 100 events/s, so 1 hour is 360,000
// messages and the stream holds about 2.8 hours. Stored times cannot be
// set by a publisher, so the hint is the real one around the event: from
// 30,000 messages before it to 30,000 after (±5 minutes at 100/s).
func TestFindAnEventInAMillionMessages(t *testing.T) {
	if os.Getenv("AGENTRELAY_SCALE") == "" {
		t.Skip("opt-in: AGENTRELAY_SCALE=1 (publishes 1,000,000 messages)")
	}
	const total, after, window = 1_000_000, 360_000, 30_000
	n := testenv.StartNATS(t)
	n.CreateStream(t, jetstream.StreamConfig{Name: "WORK", Subjects: []string{"work.>"}})
	start := time.Now()
	before := total - after - 1
	publishFiller(t, n, 0, before-window)
	since := time.Now()
	publishFiller(t, n, before-window, before)
	n.Publish(t, &nats.Msg{Subject: "work.ok.x", Data: []byte(`{"input":"needle"}`), Header: nats.Header{"Nats-Msg-Id": {"needle"}}})
	publishFiller(t, n, before, before+window)
	until := time.Now()
	publishFiller(t, n, before+window, total-1)
	t.Logf("published %d messages in %v", total, time.Since(start).Round(time.Second))

	src := &Source{Config: scaleConfig(t), NC: n.NC, JS: n.JS}
	for _, tc := range []struct {
		name         string
		since, until time.Time
		want         time.Duration
	}{
		{"with a time hint (--since/--until around it)", since, until, 2 * time.Second},
		{"without a hint (newest first)", time.Time{}, time.Time{}, 30 * time.Second},
	} {
		begin := time.Now()
		rep, err := src.Events(context.Background(), EventQuery{Arg: "needle", Since: tc.since, Until: tc.until, Deadline: time.Now().Add(time.Minute)})
		took := time.Since(begin)
		if err != nil || len(rep.Events) != 1 || rep.Events[0].Seq != uint64(before+1) {
			t.Fatalf("%s: %v, %+v", tc.name, err, rep)
		}
		t.Logf("%s: found %s in %v; %s", tc.name, rep.Events[0].Ref, took.Round(time.Millisecond), searchedText(rep))
		if took > tc.want {
			t.Errorf("%s: took %v, target %v", tc.name, took, tc.want)
		}
	}
	// The worst case, for the record: the stream's first message.
	begin := time.Now()
	rep, err := src.Events(context.Background(), EventQuery{Arg: "filler-0", Deadline: time.Now().Add(2 * time.Minute)})
	if err != nil || len(rep.Events) != 1 {
		t.Fatalf("the first message: %v %+v", err, rep)
	}
	t.Logf("the stream's first message, without a hint: found in %v; %s", time.Since(begin).Round(time.Millisecond), searchedText(rep))
}

func searchedText(rep *EventReport) string {
	out := ""
	for _, s := range rep.Searched {
		out += s.Stream + ": " + s.Text() + ". "
	}
	return out
}

// publishFiller publishes messages from to to-1, each with an
// Idempotency-Key header as producers' events have (no message id: the
// server would track a million for deduplication).
func publishFiller(t *testing.T, n *testenv.NATS, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		m := &nats.Msg{Subject: "work.ok.x", Data: []byte(`{"input":"filler"}`), Header: nats.Header{"Idempotency-Key": {"filler-" + strconv.Itoa(i)}}}
		if _, err := n.JS.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
		if i%2000 == 1999 || i == to-1 {
			select {
			case <-n.JS.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("publishing stalled")
			}
		}
	}
}

func scaleConfig(t *testing.T) *config.Config {
	t.Helper()
	c := &config.Config{
		NATS:   config.NATS{URL: "nats://127.0.0.1:4222"},
		API:    config.API{BaseURL: "http://127.0.0.1:1"},
		Routes: []config.Route{{Name: "ok", Stream: "WORK", Subjects: []string{"work.ok.>"}, TriggerID: "agtch_ok", Token: config.Token{File: "/dev/null"}}},
	}
	c.ApplyDefaults()
	return c
}
