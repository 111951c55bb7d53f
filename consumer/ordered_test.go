package consumer_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// keyWatch wraps a route's agent (shared by every replica of a test) and
// records, per conversation key, calls that overlapped.
type keyWatch struct {
	consumer.Agent
	mu       sync.Mutex
	inFlight map[string]int
	overlaps []string
	calls    int
}

func (w *keyWatch) Trigger(ctx context.Context, ev agentapi.Event) (int, error) {
	w.mu.Lock()
	w.calls++
	if ev.ConversationKey != "" {
		w.inFlight[ev.ConversationKey]++
		if w.inFlight[ev.ConversationKey] > 1 {
			w.overlaps = append(w.overlaps, ev.ConversationKey+": "+ev.Input)
		}
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.inFlight[ev.ConversationKey]--
		w.mu.Unlock()
	}()
	return w.Agent.Trigger(ctx, ev)
}

// checkOrder fails the test unless the API accepted each key's events in
// publish order ("<key> <n>" inputs, n counting from 0) and each once.
func checkOrder(t *testing.T, emu *emulator.Emulator, keys, perKey int) {
	t.Helper()
	checkOrderOf(t, emu, "", keys, perKey)
}

// checkOrderOf is checkOrder for the events accepted for one trigger id
// ("" for every one).
func checkOrderOf(t *testing.T, emu *emulator.Emulator, triggerID string, keys, perKey int) {
	t.Helper()
	next := map[string]int{}
	for _, e := range emu.Ledger() {
		if triggerID != "" && e.TriggerID != triggerID {
			continue
		}
		key, n, _ := strings.Cut(e.Input, " ")
		i, _ := strconv.Atoi(n)
		if i != next[key] {
			t.Errorf("key %s: event %d accepted when %d was due (reordered or twice)", key, i, next[key])
		}
		next[key] = i + 1
	}
	for k := range keys {
		if got := next[fmt.Sprintf("k%d", k)]; got != perKey {
			t.Errorf("key k%d: %d of %d events accepted", k, got, perKey)
		}
	}
}

// Events of one conversation key reach the agent one at a time and in
// publish order, through retries (30 % 503s, retried in place with the
// default backoff), across two replicas of which the owner drains midway;
// different keys still run in parallel.
func TestOrderedRouteKeepsEachKeyInOrderAcrossReplicas(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_ord", true), emulator.WithFaults(emulator.Faults{ServerErrorRate: 0.3, Latency: 5 * time.Millisecond}))
	watch := &keyWatch{Agent: h.agent("agtch_ord"), inFlight: map[string]int{}}
	r := defaultTimings(h.route("ord", "events.ord.>", watch))
	r.Ordering = consumer.OrderByConversationKey
	r.Breaker.Disabled = true // 30 % failures is not an outage here
	a := h.start(r)
	b := h.start(r)
	const keys, perKey = 12, 8
	for i := range perKey {
		for k := range keys {
			h.publish("events.ord.x", fmt.Sprintf(`{"input":"k%d %d","conversation_key":"k%d"}`, k, i, k), nil, fmt.Sprintf("k%d-%d", k, i))
		}
	}
	testenv.Eventually(t, 20*time.Second, "some accepted", func() bool { return h.emu.LedgerLen() >= keys*perKey/3 })
	// The owner goes; the other replica takes the route over.
	a.stop(t)
	b.stop(t)
	h.start(r)
	h.waitSettled(60*time.Second, "ord")
	checkOrder(t, h.emu, keys, perKey)
	watch.mu.Lock()
	defer watch.mu.Unlock()
	if len(watch.overlaps) > 0 {
		t.Errorf("calls overlapped for a key: %v", watch.overlaps)
	}
	if len(h.deadLetters()) != 0 {
		t.Errorf("%d dead letters", len(h.deadLetters()))
	}
}

// A replica that loses the route's pin (here: its connection drops, as in a
// partition) stops starting events at once and cancels its calls; the other
// replica takes over after the pinned TTL and keeps every key in order.
func TestOrderedRouteSurvivesItsOwnerLosingTheConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_ordc", true), emulator.WithFaults(emulator.Faults{Latency: 30 * time.Millisecond}))
	watch := &keyWatch{Agent: h.agent("agtch_ordc"), inFlight: map[string]int{}}
	r := defaultTimings(h.route("ordc", "events.ordc.>", watch))
	r.Ordering = consumer.OrderByConversationKey
	const keys, perKey = 6, 10
	for i := range perKey {
		for k := range keys {
			h.publish("events.ordc.x", fmt.Sprintf(`{"input":"k%d %d","conversation_key":"k%d"}`, k, i, k), nil, fmt.Sprintf("c%d-%d", k, i))
		}
	}
	a := h.start(r)
	testenv.Eventually(t, 20*time.Second, "some accepted", func() bool { return h.emu.LedgerLen() >= 10 })
	h.start(r)
	a.nc.Close() // the owner is cut off mid-run; its relay goroutines live on
	h.waitSettled(60*time.Second, "ordc")
	checkOrder(t, h.emu, keys, perKey)
	watch.mu.Lock()
	defer watch.mu.Unlock()
	if len(watch.overlaps) > 0 {
		t.Errorf("calls overlapped for a key: %v", watch.overlaps)
	}
}

// The ordered route's consumer is a pinned priority group.
func TestOrderedRouteConsumerIsPinned(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_ordp", true))
	r := h.route("ordp", "events.ordp.>", h.agent("agtch_ordp"))
	r.Ordering = consumer.OrderByConversationKey
	h.start(r)
	h.publish("events.ordp.x", `{"input":"x","conversation_key":"k"}`, nil, "p-1")
	h.waitSettled(10*time.Second, "ordp")
	info := h.consumerInfo("agentrelay-ordp")
	if info.Config.PriorityPolicy != jetstream.PriorityPolicyPinned || len(info.PriorityGroups) != 1 || info.PriorityGroups[0].PinnedClientID == "" {
		t.Errorf("consumer priority %v, groups %+v: want pinned_client with a pinned client", info.Config.PriorityPolicy, info.PriorityGroups)
	}
}

// The replica that takes an ordered route over must be able to hold every
// unsettled message: the consumer allows no more than one replica holds
// (twice max_in_flight: it holds more than it runs), whatever
// max_ack_pending says.
func TestOrderedRouteUnsettledIsBoundedByOneReplica(t *testing.T) {
	t.Parallel()
	r := consumer.Route{Name: "o", Stream: "S", MaxInFlight: 16, MaxAckPending: 500, Ordering: consumer.OrderByConversationKey}
	if got := r.ConsumerConfig().MaxAckPending; got != consumer.OrderedHoldFactor*16 {
		t.Errorf("ordered route's MaxAckPending = %d, want %d × max_in_flight 16", got, consumer.OrderedHoldFactor)
	}
	r.Ordering = consumer.OrderNone
	if got := r.ConsumerConfig().MaxAckPending; got != 500 {
		t.Errorf("unordered route's MaxAckPending = %d, want 500", got)
	}
}

// An ordered event whose dead letter cannot be stored (the dead-letter
// stream is full) is held, not naked: the next event of its key waits until
// the letter is stored, and only then reaches the agent.
func TestOrderedEventWaitsForItsDeadLetterToBeStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_ordd", true))
	h.nats.CreateStream(t, jetstream.StreamConfig{
		Name: dlStream, Subjects: []string{"agentrelay.dlq.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew,
	})
	h.publish("agentrelay.dlq.filler", "filler", nil, "")
	r := h.route("ordd", "events.ordd.>", h.agent("agtch_ordd"))
	r.Ordering = consumer.OrderByConversationKey
	run := h.start(r)
	// A message id that cannot be an Idempotency-Key: dead-lettered, but
	// its body names its conversation, so it keeps its place in it.
	h.publish("events.ordd.x", `{"input":"k 0","conversation_key":"k"}`, nil, "ordd/0")
	h.publish("events.ordd.x", `{"input":"k 1","conversation_key":"k"}`, nil, "ordd-1")
	testenv.Eventually(t, 15*time.Second, "dead-letter publish failures", func() bool {
		return metricValue(t, run, "agentrelay_dead_letter_publish_failures_total", "ordd") >= 2
	})
	if n := h.emu.LedgerLen(); n != 0 {
		t.Fatalf("the next event of the key was triggered (%d accepted) before its predecessor's dead letter was stored", n)
	}
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := h.nats.JS.UpdateStream(ctx, jetstream.StreamConfig{
		Name: dlStream, Subjects: []string{"agentrelay.dlq.>"}, MaxMsgs: -1, Discard: jetstream.DiscardNew,
	}); err != nil {
		t.Fatal(err)
	}
	h.waitSettled(15*time.Second, "ordd")
	if h.emu.Accepted("agtch_ordd", "ordd-1") != 1 || len(h.deadLetters()) != 2 { // the filler and ordd/0's letter
		t.Errorf("after recovery: accepted %d, %d letters", h.emu.Accepted("agtch_ordd", "ordd-1"), len(h.deadLetters()))
	}
}

// callLog wraps a route's agent and records, for every call, when it
// started and how many calls were under way then (itself included), and
// when the first 429 came back.
type callLog struct {
	consumer.Agent
	mu     sync.Mutex
	now    int
	starts []callStart
	cutAt  time.Time // when the first 429 came back
}

type callStart struct {
	at         time.Time
	concurrent int
}

func (c *callLog) Trigger(ctx context.Context, ev agentapi.Event) (int, error) {
	c.mu.Lock()
	c.now++
	c.starts = append(c.starts, callStart{time.Now(), c.now})
	c.mu.Unlock()
	status, err := c.Agent.Trigger(ctx, ev)
	c.mu.Lock()
	c.now--
	if status == 429 && c.cutAt.IsZero() {
		c.cutAt = time.Now()
	}
	c.mu.Unlock()
	return status, err
}

// AIMD limits an ordered route's calls too: once 429s answer a share of
// the calls, the route's concurrency is cut, and no more calls are under
// way at once than the limit in force, although the route holds an event
// of each of its 8 keys and retries each in place. Every key stays in
// order.
func TestOrderedRouteCallsHonourTheAIMDLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_orda", true), emulator.WithFaults(emulator.Faults{Latency: 50 * time.Millisecond}))
	calls := &callLog{Agent: h.agent("agtch_orda")}
	r := defaultTimings(h.route("orda", "events.orda.>", calls))
	r.Ordering = consumer.OrderByConversationKey
	r.MaxInFlight = 8
	const keys, perKey = 8, 50
	for i := range perKey {
		for k := range keys {
			h.publish("events.orda.x", fmt.Sprintf(`{"input":"k%d %d","conversation_key":"k%d"}`, k, i, k), nil, fmt.Sprintf("a%d-%d", k, i))
		}
	}
	run := h.start(r)
	testenv.Eventually(t, 20*time.Second, "8 calls under way at once", func() bool {
		calls.mu.Lock()
		defer calls.mu.Unlock()
		return calls.now == keys
	})
	// The limit in force, sampled as the calls go.
	type sample struct {
		at    time.Time
		limit float64
	}
	var limits []sample
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			limits = append(limits, sample{time.Now(), metricValue(t, run, "agentrelay_messages_in_flight_limit", "orda")})
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	h.emu.SetFaults(emulator.Faults{Latency: 50 * time.Millisecond, RateLimitRate: 0.3, RetryAfter: "1"})
	time.Sleep(time.Second) // the rate limit lasts a second
	h.emu.SetFaults(emulator.Faults{Latency: 50 * time.Millisecond})
	h.waitSettled(60*time.Second, "orda")
	close(stop)
	<-sampled
	checkOrder(t, h.emu, keys, perKey)

	calls.mu.Lock()
	defer calls.mu.Unlock()
	cut, judged := false, 0
	for _, s := range calls.starts {
		// The limit in force when the call started, as the gauge read
		// around then (it trails the limit a little): the highest sample
		// of the 100ms before the call.
		limit := -1.0
		for _, l := range limits {
			if l.at.After(s.at.Add(-100*time.Millisecond)) && l.at.Before(s.at.Add(5*time.Millisecond)) {
				limit = max(limit, l.limit)
			}
		}
		if limit >= 0 && limit < keys {
			cut, judged = true, judged+1
			if float64(s.concurrent) > limit+1 { // a call admitted just before a cut may still start
				t.Errorf("%d calls under way at once with the limit at %v", s.concurrent, limit)
			}
		}
	}
	if !cut || judged < 10 {
		t.Errorf("the 429s cut the limit %v, %d calls judged under a cut limit: nothing to judge by", cut, judged)
	}
}
