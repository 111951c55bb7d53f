package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/testenv"
	"github.com/agentrelay/agentrelay/internal/testenv/wait"
)

// In-flight calls never exceed MaxInFlight, and no message waits in a
// client buffer long enough for its AckWait to run out: the run lasts longer
// than AckWait, and still every message is delivered exactly once.
func TestInFlightIsBoundedAndNothingExpiresInABuffer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_slow", true), emulator.WithFaults(emulator.Faults{Latency: 150 * time.Millisecond}))
	a := &countingAgent{Agent: h.agent("agtch_slow")}
	r := h.route("slow", "events.slow.>", a)
	r.MaxInFlight = 4
	r.AckWait = 2500 * time.Millisecond // > call timeout 2s; the run takes ~3s
	for i := range 80 {
		h.publish("events.slow.x", `{"input":"x"}`, nil, fmt.Sprintf("slow-%d", i))
	}
	h.start(r)
	h.waitSettled(30*time.Second, "slow")
	maxInFlight, calls := a.stats()
	if maxInFlight != 4 {
		t.Errorf("max calls in flight %d, want exactly the limit 4", maxInFlight)
	}
	if calls != 80 || h.emu.LedgerLen() != 80 || h.emu.Stats().Replays != 0 {
		t.Errorf("%d calls, %d accepted, %d replays: want 80, 80, 0 (a redelivery means a message expired unstarted)",
			calls, h.emu.LedgerLen(), h.emu.Stats().Replays)
	}
}

// Replicas share one consumer; each keeps to its own limit and together
// they use the consumer's MaxAckPending.
func TestReplicasShareTheConsumer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_shared", true), emulator.WithFaults(emulator.Faults{Latency: 100 * time.Millisecond}))
	a1 := &countingAgent{Agent: h.agent("agtch_shared")}
	a2 := &countingAgent{Agent: h.agent("agtch_shared")}
	r1 := h.route("shared", "events.shared.>", a1)
	r1.MaxInFlight, r1.MaxAckPending = 4, 8
	r2 := r1
	r2.Agent = a2
	h.start(r1)
	h.start(r2)
	for i := range 60 {
		h.publish("events.shared.x", `{"input":"x"}`, nil, fmt.Sprintf("shared-%d", i))
	}
	h.waitSettled(30*time.Second, "shared")
	m1, c1 := a1.stats()
	m2, c2 := a2.stats()
	if c1+c2 != 60 || h.emu.LedgerLen() != 60 {
		t.Errorf("calls %d+%d, ledger %d; want 60", c1, c2, h.emu.LedgerLen())
	}
	if c1 == 0 || c2 == 0 || m1 > 4 || m2 > 4 {
		t.Errorf("replica 1: %d calls, max %d in flight; replica 2: %d calls, max %d", c1, m1, c2, m2)
	}
}

// A worker that dies mid-call (the API accepted, the ack never went out) is
// made whole by redelivery: the next worker calls again with the same
// Idempotency-Key and the API returns the original 202 without a second
// event.
func TestWorkerKilledMidCallRedeliversWithTheSameKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_k", true), emulator.WithFaults(emulator.Faults{Latency: 500 * time.Millisecond}))
	r := h.route("k", "events.k.>", h.agent("agtch_k"))
	r.AckWait = 2500 * time.Millisecond
	victim := h.start(r)
	h.publish("events.k.1", `{"input":"x"}`, nil, "kill-1")
	testenv.Eventually(t, 5*time.Second, "call started", func() bool { return h.emu.Stats().Requests >= 1 })
	// Kill: the connection goes away with no drain, no ack, no nak.
	victim.nc.Close()
	if err := h.emu.WaitLedgerLen(ctxTimeout(t, 5*time.Second), 1); err != nil {
		t.Fatal("the first call was never accepted")
	}
	victim.stop(t)
	if info := h.consumerInfo("agentrelay-k"); info.NumAckPending != 1 {
		t.Fatalf("ack pending %d, want 1 (the accepted event was not acked)", info.NumAckPending)
	}

	h.emu.SetFaults(emulator.Faults{})
	h.start(r)
	h.waitSettled(15*time.Second, "k")
	if n := h.emu.Accepted("agtch_k", "kill-1"); n != 1 {
		t.Errorf("accepted %d times, want 1", n)
	}
	var keys []string
	for _, rq := range h.emu.Requests() {
		keys = append(keys, rq.Header.Get("Idempotency-Key"))
	}
	if len(keys) != 2 || keys[0] != "kill-1" || keys[1] != "kill-1" || h.emu.Stats().Replays != 1 {
		t.Errorf("requests carried keys %v (replays %d), want the same key twice and one replay", keys, h.emu.Stats().Replays)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The broker restarts while messages flow; the worker reconnects on its own
// and finishes every event, each accepted once.
func TestNATSRestartDuringProcessing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_r", true), emulator.WithFaults(emulator.Faults{Latency: 20 * time.Millisecond}))
	r := h.route("r", "events.r.>", h.agent("agtch_r"))
	r.MaxInFlight = 4
	h.start(r)
	const n = 200
	for i := range n {
		h.publish("events.r.x", `{"input":"x"}`, nil, fmt.Sprintf("r-%d", i))
	}
	testenv.Eventually(t, 10*time.Second, "some accepted", func() bool { return h.emu.LedgerLen() >= 20 })
	if err := h.nats.Server.Restart(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "all accepted after the restart", func() bool { return h.emu.LedgerLen() >= n })
	h.waitSettled(30*time.Second, "r")
	seen := map[string]int{}
	for _, e := range h.emu.Ledger() {
		seen[e.IdempotencyKey]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("r-%d", i)]; c != 1 {
			t.Errorf("r-%d accepted %d times", i, c)
		}
	}
}

// Drain on shutdown: in-flight calls finish and are acked, nothing arrives
// later, nothing is left waiting for an ack.
func TestGracefulDrainLeavesNothingAckPending(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_d", true), emulator.WithFaults(emulator.Faults{Latency: 300 * time.Millisecond}))
	r := h.route("d", "events.d.>", h.agent("agtch_d"))
	r.MaxInFlight = 8
	run := h.start(r)
	for i := range 40 {
		h.publish("events.d.x", `{"input":"x"}`, nil, fmt.Sprintf("d-%d", i))
	}
	testenv.Eventually(t, 5*time.Second, "calls in flight", func() bool { return h.emu.Stats().Requests >= 8 })
	run.stop(t)
	// What is still ack-pending was handed back with a nak (the one asked
	// for ahead of a free slot, and any a pull delivered as the drain
	// began): it waits for the next pull, not for AckWait. The drain
	// flushed its acks, but the server applies acks on a queue of its
	// own: a read at once can come before it has (a loaded machine), so
	// the count is awaited, well within AckWait (after which nothing
	// would ever go below it).
	handedBack := metricSum(t, run, "agentrelay_messages_finished_total", "d", "retried", "canceled")
	var info *jetstream.ConsumerInfo
	wait.ForNil(t, 2*time.Second, "nothing ack-pending after drain but what it handed back", func() error {
		if info = h.consumerInfo("agentrelay-d"); float64(info.NumAckPending) > handedBack {
			return fmt.Errorf("%d ack-pending, %v handed back", info.NumAckPending, handedBack)
		}
		return nil
	})
	accepted := h.emu.LedgerLen()
	if accepted < 8 || int(info.NumPending)+info.NumAckPending+accepted != 40 {
		t.Errorf("accepted %d + pending %d + handed back %d != 40", accepted, info.NumPending, info.NumAckPending)
	}
	// A new replica finishes the rest, each once, well within AckWait (5s):
	// nothing was left stranded.
	h.emu.SetFaults(emulator.Faults{})
	h.start(r)
	h.waitSettled(4*time.Second, "d")
	if h.emu.LedgerLen() != 40 || h.emu.Stats().Replays != 0 {
		t.Errorf("ledger %d, replays %d; want 40, 0", h.emu.LedgerLen(), h.emu.Stats().Replays)
	}
}

// When the grace period runs out, calls still running are canceled and
// their messages handed back at once (no AckWait): another replica takes
// them straight away. The hand-back costs one delivery, not a loop of them
// through this replica's own open pulls.
func TestDrainGraceExpiryHandsMessagesBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_h", true))
	h.emu.SetFaults(emulator.Faults{HangRate: 1})
	r := h.route("h", "events.h.>", h.agent("agtch_h"))
	r.AckWait = time.Minute
	run := h.startWith(func(o *consumer.Options) { o.DrainGrace = 300 * time.Millisecond }, r)
	h.publish("events.h.1", `{"input":"x"}`, nil, "hang-1")
	testenv.Eventually(t, 5*time.Second, "call hanging", func() bool { return h.emu.Stats().Hangs >= 1 })
	start := time.Now()
	run.stop(t)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("drain took %v", d)
	}
	h.emu.SetFaults(emulator.Faults{})
	h.start(r)
	h.waitSettled(10*time.Second, "h") // far below the one-minute AckWait
	if n := h.emu.Accepted("agtch_h", "hang-1"); n != 1 {
		t.Errorf("accepted %d times", n)
	}
	if d := h.consumerInfo("agentrelay-h").Delivered.Consumer; d != 2 {
		t.Errorf("%d deliveries, want 2 (the first, and the one after the hand-back)", d)
	}
}

// A call slower than AckWait keeps its message with in-progress signals; it
// is not redelivered to anyone meanwhile.
func TestSlowCallIsKeptAliveWithInProgress(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	slow := &sleepyAgent{id: "agtch_slowpoke", d: 3 * time.Second}
	r := h.route("slowpoke", "events.slowpoke.>", slow)
	r.AckWait = time.Second
	h.start(r)
	h.start(r) // a second replica that would take a redelivery
	h.publish("events.slowpoke.1", `{"input":"x"}`, nil, "slow-1")
	h.waitSettled(15*time.Second, "slowpoke")
	if n := slow.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1: the message was redelivered while its call ran", n)
	}
}

type sleepyAgent struct {
	id    string
	d     time.Duration
	calls atomic.Int32
}

func (s *sleepyAgent) ID() agentapi.TriggerID { id, _ := agentapi.ParseTriggerID(s.id); return id }
func (s *sleepyAgent) Trigger(ctx context.Context, _ agentapi.Event) (int, error) {
	s.calls.Add(1)
	select {
	case <-time.After(s.d):
		return 202, nil
	case <-ctx.Done():
		return 0, &agentapi.Error{Class: agentapi.ClassCanceled, Err: ctx.Err()}
	}
}

// A rotated token file takes effect without a restart: 401s are retried
// (not dead-lettered) until the new token is in place.
func TestTokenRotationMidRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_rot", true))
	path := t.TempDir() + "/token"
	writeFile(t, path, "old-token")
	ft, err := agentapi.NewFileToken(path, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r := h.route("rot", "events.rot.>", h.agent("agtch_rot", ft))
	r.Retry.MaxAttempts = 100
	h.start(r)
	h.publish("events.rot.1", `{"input":"x"}`, nil, "rot-1")
	testenv.Eventually(t, 5*time.Second, "401s", func() bool { return h.emu.Stats().ByStatus[401] >= 2 })
	h.emu.AddToken("new-token", "agtch_rot")
	writeFile(t, path, "new-token")
	h.waitSettled(10*time.Second, "rot")
	if h.emu.Accepted("agtch_rot", "rot-1") != 1 || len(h.deadLetters()) != 0 {
		t.Errorf("accepted %d, dead letters %d", h.emu.Accepted("agtch_rot", "rot-1"), len(h.deadLetters()))
	}
}

// If the dead-letter stream refuses the copy, the original stays: it is
// retried, never dropped, and the failure is counted.
func TestDeadLetterPublishFailureKeepsTheOriginal(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A dead-letter stream that is full and refuses new messages.
	h.nats.CreateStream(t, jetstream.StreamConfig{
		Name: dlStream, Subjects: []string{"agentrelay.dlq.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew,
	})
	h.publish("agentrelay.dlq.filler", "filler", nil, "")
	r := h.route("p", "events.p.>", h.agent("agtch_p_unknown"))
	run := h.start(r)
	h.publish("events.p.1", `not json`, nil, "poison-1")
	testenv.Eventually(t, 10*time.Second, "publish failures counted", func() bool {
		return metricValue(t, run, "agentrelay_dead_letter_publish_failures_total", "p") >= 2
	})
	if info := h.consumerInfo("agentrelay-p"); info.NumAckPending+int(info.NumPending) != 1 {
		t.Fatalf("the original is gone: %+v", info)
	}
	// Make room: the next retry stores it and terminates the original.
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := h.nats.JS.UpdateStream(ctx, jetstream.StreamConfig{
		Name: dlStream, Subjects: []string{"agentrelay.dlq.>"}, MaxMsgs: -1, Discard: jetstream.DiscardNew,
	}); err != nil {
		t.Fatal(err)
	}
	h.waitSettled(10*time.Second, "p")
	if dl := h.deadLetterBy("poison-1"); dl == nil || dl.Header.Get(deadletter.HeaderReason) != "invalid_json" {
		t.Errorf("dead letter not stored after recovery: %v", dl)
	}
}

// Setup lists every problem: each route whose stream is missing.
func TestSetupReportsEveryMissingStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.route("a", "x.>", h.agent("agtch_a"))
	a.Stream = "NOPE_A"
	b := h.route("b", "y.>", h.agent("agtch_b"))
	b.Stream = "NOPE_B"
	relay, err := consumer.New(h.nats.JS, []consumer.Route{a, b}, consumer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Setup(ctxTimeout(t, 5*time.Second))
	if err == nil || !strings.Contains(err.Error(), `route "a": stream "NOPE_A" does not exist`) || !strings.Contains(err.Error(), `route "b": stream "NOPE_B" does not exist`) {
		t.Errorf("got %v", err)
	}
}

// AckWait may be shorter than a call (keep-alives hold the message), but
// not so short that keep-alives every third of it cannot keep up.
func TestNewRejectsAnAckWaitKeepAlivesCannotHold(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.route("a", "x.>", h.agent("agtch_a"))
	r.AckWait = 100 * time.Millisecond
	_, err := consumer.New(h.nats.JS, []consumer.Route{r}, consumer.Options{})
	if err == nil || !strings.Contains(err.Error(), "AckWait: 100ms is under 1s") {
		t.Errorf("got %v", err)
	}
}

// The consumer is created to match the route, and updated when the route
// changes.
func TestSetupCreatesAndUpdatesTheConsumer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.route("c", "events.c.>", h.agent("agtch_c"))
	r.MaxInFlight, r.MaxAckPending, r.AckWait = 3, 9, 7*time.Second
	for _, ackWait := range []time.Duration{7 * time.Second, 11 * time.Second} {
		r.AckWait = ackWait
		relay, err := consumer.New(h.nats.JS, []consumer.Route{r}, consumer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := relay.Setup(ctxTimeout(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		c := h.consumerInfo("agentrelay-c").Config
		if c.AckWait != ackWait || c.MaxAckPending != 9 || c.MaxDeliver != -1 || c.AckPolicy != jetstream.AckExplicitPolicy || c.FilterSubject != "events.c.>" {
			t.Errorf("consumer config %+v", c)
		}
	}
}

// Every labelled counter a route can touch exists at zero from the start:
// an alert on increase() cannot see a series appear, so without this the
// first dead letter of a reason would never fire it.
func TestCountersExistAtZeroBeforeTheFirstEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	run := h.start(h.route("z", "events.z.>", h.agent("agtch_z")))
	mfs, err := run.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if series[mf.GetName()] == nil {
					series[mf.GetName()] = map[string]bool{}
				}
				series[mf.GetName()][l.GetName()+"="+l.GetValue()] = true
			}
		}
	}
	for name, labels := range map[string][]string{
		"agentrelay_dead_letters_total":             {"reason=forbidden", "reason=max_attempts", "reason=invalid_json", "route=z"},
		"agentrelay_messages_finished_total":        {"outcome=acked", "outcome=retried", "outcome=dead_lettered", "class=server_error", "class=gated"},
		"agentrelay_trigger_requests_total":         {"code=202", "code=503", "error=timeout", "error=network"},
		"agentrelay_settle_failures_total":          {"op=ack", "op=term"},
		"agentrelay_route_health_transitions_total": {"transition=tripped", "transition=resumed", "condition=outage", "condition=not_runnable"},
		"agentrelay_route_health":                   {"state=healthy", "state=outage", "state=unauthorized", "state=not_runnable", "state=rate_limited"},
	} {
		for _, l := range labels {
			if !series[name][l] {
				t.Errorf("%s has no series with %s before any event", name, l)
			}
		}
	}
}

// A consumer deleted under a running relay is re-created after its last
// known ack floor: the events it had already settled are not triggered
// again (with the stream's default limits retention they are all still
// there, and "deliver: all" would replay every one).
func TestDeletedConsumerIsRecreatedAfterItsAckFloor(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_del", true))
	r := h.start(h.route("del", "events.del.>", h.agent("agtch_del")))
	for i := range 5 {
		h.publish("events.del.x", `{"input":"x"}`, nil, fmt.Sprintf("del-%d", i))
	}
	h.waitSettled(10*time.Second, "del")
	testenv.Eventually(t, 10*time.Second, "the relay read the ack floor", func() bool {
		return r.relay.AckFloorSeen("del") >= h.lastPublished("del")
	})
	if err := h.nats.JS.DeleteConsumer(context.Background(), stream, "agentrelay-del"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "consumer re-created", func() bool {
		_, err := h.nats.JS.Consumer(context.Background(), stream, "agentrelay-del")
		return err == nil
	})
	h.publish("events.del.x", `{"input":"new"}`, nil, "del-new")
	h.waitSettled(15*time.Second, "del")
	if s := h.emu.Stats(); s.Requests != 6 || s.Replays != 0 || h.emu.LedgerLen() != 6 {
		t.Errorf("%d requests, %d replays, ledger %d: want the 5 settled events not sent again", s.Requests, s.Replays, h.emu.LedgerLen())
	}
}

// Where a consumer starts is decided when it is created; a route whose
// policy differs from an existing consumer's does not fail to start.
func TestAnExistingConsumerKeepsItsDeliverPolicy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if _, err := h.nats.JS.CreateConsumer(context.Background(), stream, jetstream.ConsumerConfig{
		Durable: "agentrelay-keep", DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	r := h.route("keep", "events.keep.>", h.agent("agtch_keep")) // deliver: all
	relay, err := consumer.New(h.nats.JS, []consumer.Route{r}, consumer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Setup(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if c := h.consumerInfo("agentrelay-keep").Config; c.DeliverPolicy != jetstream.DeliverNewPolicy || c.FilterSubject != "events.keep.>" {
		t.Errorf("consumer config %+v", c)
	}
}
