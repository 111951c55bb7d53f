package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/inspect"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// "What happened to event X?" told for each state an event can be in, from
// what NATS holds, by message id and by stream:sequence: accepted;
// dead-lettered; replayed, failing again, replayed again and accepted;
// pending behind a paused route; and an id nobody published.
func TestEventsShowTellsTheStory(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.publish("work.ok.a", `{"input":"fine"}`, "ev-ok") // WORK:1
	s.settled("ok")
	s.publish("work.locked.x", `{"input":"no access"}`, "ev-locked") // WORK:2
	s.settled("locked")
	if code, out, _ := s.cli("", "pause", "ok", "--until", "1h"); code != 0 {
		t.Fatalf("pause: %s", out)
	}
	s.publish("work.ok.b", `{"input":"later"}`, "ev-wait") // WORK:3

	show := func(golden_ string, args ...string) string {
		t.Helper()
		code, out, errOut := s.cli("", append([]string{"events", "show"}, args...)...)
		if code != 0 {
			t.Fatalf("events show %v: %d\n%s%s", args, code, out, errOut)
		}
		if golden_ != "" {
			golden(t, golden_, trimTrailing(out))
		}
		return out
	}
	show("events_accepted", "WORK:1")
	show("events_dead_lettered", "ev-locked")
	show("events_pending", "ev-wait")

	// Replayed while the cause stays (dead-lettered again: WORK:4), then
	// fixed and replayed again (WORK:5), accepted.
	if code, out, _ := s.cli("", "dlq", "replay", "--route", "locked"); code != 0 {
		t.Fatalf("replay: %s", out)
	}
	s.settled("locked")
	s.emu.AddToken(token, lockID)
	if code, out, _ := s.cli("", "dlq", "replay", "--route", "locked"); code != 0 {
		t.Fatalf("replay: %s", out)
	}
	s.settled("locked")
	show("events_replayed", "ev-locked")
	if out := show("", "WORK:5"); !strings.Contains(squash(out), "replay replay 2 of the event first published as WORK:2") || !strings.Contains(squash(out), "route locked accepted") {
		t.Errorf("the last replay's own story:\n%s", out)
	}

	code, out, _ := s.cli("", "events", "show", "ev-locked", "--json")
	var got struct {
		Events []inspect.EventStory `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got.Events) != 1 {
		t.Fatalf("--json: %d %v\n%s", code, err, out)
	}
	ev := got.Events[0]
	if ev.Ref != "WORK:2" || ev.Key != "ev-locked" || ev.Routes[0].Route != "locked" || ev.Routes[0].State != inspect.StateReplayed ||
		len(ev.Replays) != 2 || ev.Replays[0].Routes[0].State != inspect.StateReplayed || ev.Replays[1].Routes[0].State != inspect.StateAccepted ||
		ev.Replays[1].Key != "ev-locked" {
		t.Errorf("--json story: %+v", ev)
	}
	if n := s.emu.Accepted(lockID, "ev-locked"); n != 1 {
		t.Errorf("accepted %d times", n)
	}

	code, out, _ = s.cli("", "events", "show", "nobody-sent-this")
	if code != 1 || !strings.Contains(out, `no message with message id or Idempotency-Key "nobody-sent-this"`) || !strings.Contains(out, "cannot be asked for a message by id") {
		t.Errorf("unknown id: %d\n%s", code, out)
	}
	if code, _, errOut := s.cli("", "events", "show", "WORK:99"); code != 1 || !strings.Contains(errOut, "has no message 99 yet") {
		t.Errorf("a sequence not yet written: %d %s", code, errOut)
	}
}

// A delivered message not yet settled is "delivered", with what consumer
// info cannot tell apart said plainly.
func TestEventsShowDeliveredButNotSettled(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.emu.SetRunnable(okID, false) // 409: the route stops and holds the message to probe with
	s.publish("work.ok.x", `{"input":"held"}`, "ev-held")
	var out string
	// It waits behind the route's condition, as the replica holding the
	// route stopped answers.
	testenv.Eventually(t, 10*time.Second, "the event delivered, behind the stopped route", func() bool {
		_, out, _ = s.cli("", "events", "show", "ev-held")
		return strings.Contains(squash(out), "route ok delivered:") && strings.Contains(squash(out), "it waits behind the route's condition: not_runnable since")
	})
	if !strings.Contains(out, "in flight, waiting out a retry delay, or already acked out of order above the ack floor") || !strings.Contains(out, "consumer info cannot tell these apart") {
		t.Errorf("delivered story:\n%s", out)
	}
	if !strings.Contains(squash(out), "(on 1 replica)") {
		t.Errorf("the story does not say the event waits behind the stopped route:\n%s", out)
	}
	s.emu.SetRunnable(okID, true)
	s.settled("ok")
	testenv.Eventually(t, 10*time.Second, "the event accepted", func() bool {
		_, out, _ = s.cli("", "events", "show", "WORK:1")
		return strings.Contains(squash(out), "route ok accepted:")
	})
}

// A message its stream no longer holds (expired, deleted; or acked on a
// work-queue stream): an accepted one is told from the consumer's ack floor
// with its subject unknown, a dead-lettered one from its dead letter, found
// by its message id.
func TestEventsShowAMessageTheStreamNoLongerHolds(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.publish("work.ok.a", `{"input":"fine"}`, "gone-ok") // WORK:1
	s.settled("ok")
	s.publish("work.locked.x", `{"input":"no"}`, "gone-locked") // WORK:2
	s.settled("locked")
	st, err := s.nats.JS.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{1, 2} {
		if err := st.DeleteMsg(context.Background(), seq); err != nil {
			t.Fatal(err)
		}
	}
	code, out, _ := s.cli("", "events", "show", "WORK:1")
	out = squash(out)
	if code != 0 || !strings.Contains(out, "the stream no longer holds the message") ||
		!strings.Contains(out, "route ok accepted:") || !strings.Contains(out, "its subject is unknown") {
		t.Errorf("an accepted message gone from the stream:\n%s", out)
	}
	code, out, _ = s.cli("", "events", "show", "gone-locked")
	out = squash(out)
	if code != 0 || !strings.Contains(out, "event WORK:2") || !strings.Contains(out, "subject work.locked.x") ||
		!strings.Contains(out, "idempotency key gone-locked (its dead letter)") || !strings.Contains(out, "route locked dead_lettered: forbidden (403)") {
		t.Errorf("a dead-lettered message gone from the stream, by id:\n%s", out)
	}
	if code, out, _ := s.cli("", "events", "show", "gone-ok"); code != 1 || !strings.Contains(out, "found only through its dead letter") {
		t.Errorf("an accepted message gone from the stream, by id: %d\n%s", code, out)
	}
}

// An event far older than the last 10,000 messages is found without a
// hint (the streams are read newest first, to their start), and with a
// time hint the read starts at the time given; either way the output says
// how far it looked, and progress goes to stderr when asked for.
func TestEventsShowFindsAnOldEventAndSaysHowFarItLooked(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.nats.CreateStream(t, jetstream.StreamConfig{Name: stream, Subjects: []string{"work.>"}}) // as the worker would
	s.publish("work.ok.x", `{"input":"old"}`, "needle")                                        // WORK:1
	time.Sleep(10 * time.Millisecond)
	after := time.Now()
	publishMany(t, s, 10_500)

	code, out, errOut := s.cli("", "events", "show", "needle", "--progress")
	if code != 0 || !strings.Contains(squash(out), "event WORK:1") {
		t.Fatalf("an event 10,500 messages back: %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "searching WORK: ") {
		t.Errorf("--progress printed no progress on stderr:\n%s", errOut)
	}
	code, out, _ = s.cli("", "events", "show", "needle", "--since", after.UTC().Format(time.RFC3339Nano))
	if code != 1 || !strings.Contains(out, "WORK: searched sequences 2 to 10501 (stored ") || !strings.Contains(out, "all of the range searched") ||
		!strings.Contains(out, "within the times given") {
		t.Errorf("an event before --since: %d\n%s", code, out)
	}
	code, out, _ = s.cli("", "events", "show", "needle", "--until", after.UTC().Format(time.RFC3339Nano), "--json")
	var rep struct {
		Events   []inspect.EventStory `json:"events"`
		Searched []inspect.Searched   `json:"searched"`
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || len(rep.Events) != 1 || rep.Events[0].Ref != "WORK:1" {
		t.Fatalf("an event before --until: %d %v\n%s", code, err, out)
	}
	for _, sr := range rep.Searched {
		if sr.Stream == stream && (sr.From != 1 || sr.To != 1 || sr.Messages != 1) {
			t.Errorf("with --until just after the event, it read %+v, want sequence 1 only", sr)
		}
	}
	if code, _, errOut := s.cli("", "events", "show", "needle", "--since", "1h", "--until", "2h"); code != 2 || !strings.Contains(errOut, "--since must be before --until") {
		t.Errorf("--since after --until: %d %s", code, errOut)
	}
}

// publishMany publishes n small messages on work.other (no route's), as
// fast as the stream takes them.
func publishMany(t *testing.T, s *stack, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range n {
		if _, err := s.nats.JS.PublishAsync("work.other", []byte("x"), jetstream.WithMsgID(fmt.Sprintf("filler-%d", i))); err != nil {
			t.Fatal(err)
		}
		if i%1000 != 999 && i != n-1 {
			continue
		}
		select {
		case <-s.nats.JS.PublishAsyncComplete():
		case <-ctx.Done():
			t.Fatal("publishing took over a minute")
		}
	}
}
