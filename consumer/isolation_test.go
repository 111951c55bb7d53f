package consumer_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// Failure isolation (issue 17): no message, key or route reaches beyond
// itself. The events that fail carry a marker the emulator answers the
// same way every time, as an API bug tied to one input would.

const (
	bad500  = "#bad-500"
	badHang = "#bad-hang"
	bad429  = "#bad-429"
)

func badEvents() emulator.Faults {
	return emulator.Faults{HangFor: time.Minute, ByInput: []emulator.InputFault{
		{Marker: bad500, Fault: emulator.Fault{Kind: emulator.FaultServerError, Status: 500}},
		{Marker: badHang, Fault: emulator.Fault{Kind: emulator.FaultHang}},
		{Marker: bad429, Fault: emulator.Fault{Kind: emulator.FaultRateLimit, RetryAfter: "1"}},
	}}
}

// callsFor counts the API requests for each Idempotency-Key.
func callsFor(emu *emulator.Emulator, key string) int { return requestsByKey(emu)[key] }

// checkDeadLettered fails unless the event with key was dead-lettered as
// max_attempts with the class (and status) of its failure, after at most
// budget calls.
func checkDeadLettered(t *testing.T, h *harness, key, class string, status, budget int) {
	t.Helper()
	m := h.deadLetterBy(key)
	if m == nil {
		t.Errorf("%s: not dead-lettered", key)
		return
	}
	if got := m.Header.Get(deadletter.HeaderReason); got != string(deadletter.ReasonMaxAttempts) {
		t.Errorf("%s: reason %q, want max_attempts", key, got)
	}
	if got := m.Header.Get(deadletter.HeaderClass); got != class {
		t.Errorf("%s: class %q, want %q", key, got, class)
	}
	if status != 0 && m.Header.Get(deadletter.HeaderStatus) != fmt.Sprint(status) {
		t.Errorf("%s: status %q, want %d", key, m.Header.Get(deadletter.HeaderStatus), status)
	}
	if n := callsFor(h.emu, key); n > budget {
		t.Errorf("%s: called %d times, want at most %d", key, n, budget)
	}
}

// Finding 1: ten events the API answers 500 for ever look like an outage
// at first; a valid event published 3 s later probes the route back at
// once, and the ten follow their own budget into the dead-letter stream.
// One replica sees all ten fail at once and stops the route; with two, the
// route stops everywhere.
//
// Two top-level tests rather than parallel subtests: each runs ~30 s on the
// default timings, and a parallel subtest waits for a free slot again
// behind every test already waiting, which made this the last test of the
// package to end.
func TestAFewBadEventsNeverStopTheRoute(t *testing.T) {
	t.Parallel()
	fewBadEvents(t, 1)
}

// The same as TestAFewBadEventsNeverStopTheRoute, with two replicas.
func TestAFewBadEventsNeverStopTheRouteOfTwoReplicas(t *testing.T) {
	t.Parallel()
	fewBadEvents(t, 2)
}

func fewBadEvents(t *testing.T, replicas int) {
	h := newHarness(t, emulator.WithTrigger("agtch_f1", true), emulator.WithFaults(badEvents()), emulator.WithRequestLog(10_000))
	r := defaultTimings(h.route("f1", "events.f1.>", h.agent("agtch_f1")))
	for range replicas {
		h.start(r)
	}
	for i := range 10 {
		h.publish("events.f1.x", fmt.Sprintf(`{"input":"event %d %s"}`, i, bad500), nil, fmt.Sprintf("f1-bad-%d", i))
	}
	time.Sleep(3 * time.Second) // the schedule: the valid event comes 3 s later
	published := time.Now()
	h.publish("events.f1.x", `{"input":"valid"}`, nil, "f1-valid")
	testenv.Eventually(t, 10*time.Second, "the valid event accepted", func() bool { return h.emu.Accepted("agtch_f1", "f1-valid") == 1 })
	if d := time.Since(published); d > 5*time.Second {
		t.Errorf("the valid event was accepted %v after it was published, want within 5s", d.Round(time.Millisecond))
	}
	h.waitSettled(180*time.Second, "f1")
	for i := range 10 {
		// Its own ten failures, and the few calls of the "outage" they
		// looked like: the one that stopped the route and a probe or two.
		checkDeadLettered(t, h, fmt.Sprintf("f1-bad-%d", i), "server_error", 500, consumer.DefaultMaxAttempts+3)
	}
}

// Finding 11: routes are independent: while one route is stopped, another
// route of the same replica with a normal share of 503s keeps running.
func TestOneRoutesConditionNeverStopsAnother(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_f11a", false), emulator.WithTrigger("agtch_f11b", true),
		emulator.WithFaults(emulator.Faults{ServerErrorRate: 0.03, Seed: 11}))
	a := defaultTimings(h.route("f11a", "events.f11a.>", h.agent("agtch_f11a")))
	b := defaultTimings(h.route("f11b", "events.f11b.>", h.agent("agtch_f11b")))
	run := h.start(a, b)
	h.publish("events.f11a.x", `{"input":"a"}`, nil, "f11a-0")
	testenv.Eventually(t, 10*time.Second, "route a stopped", func() bool {
		return metricValue(t, run, "agentrelay_route_health", "f11a", "not_runnable") == 1
	})
	for i := range 300 {
		h.publish("events.f11b.x", `{"input":"b"}`, nil, fmt.Sprintf("f11b-%d", i))
	}
	h.waitSettled(30*time.Second, "f11b")
	if n := metricValue(t, run, "agentrelay_route_health_transitions_total", "f11b", "tripped", "outage"); n != 0 {
		t.Errorf("route b stopped %v times for an outage while route a was stopped", n)
	}
	if got := len(h.deadLetters()); got != 0 {
		t.Errorf("%d dead letters, want none", got)
	}
}

// Finding 5: one event answered 429 for ever halves nothing: the route's
// concurrency stays whole while it lives, and it is dead-lettered within
// its budget.
func TestOneEventsRateLimitNeitherSlowsNorStopsTheRoute(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_f5", true), emulator.WithFaults(badEvents()), emulator.WithRequestLog(10_000))
	r := defaultTimings(h.route("f5", "events.f5.>", h.agent("agtch_f5")))
	run := h.start(r)
	h.publish("events.f5.x", `{"input":"`+bad429+`"}`, nil, "f5-limited")
	var lowest float64 = 1 << 20
	for i := range 200 {
		h.publish("events.f5.x", `{"input":"fine"}`, nil, fmt.Sprintf("f5-%d", i))
		if i%20 == 0 {
			lowest = min(lowest, metricValue(t, run, "agentrelay_messages_in_flight_limit", "f5"))
			time.Sleep(100 * time.Millisecond)
		}
	}
	h.waitSettled(150*time.Second, "f5")
	if lowest < float64(r.MaxInFlight) {
		t.Errorf("the route's concurrency limit fell to %v of %d for one event's 429s", lowest, r.MaxInFlight)
	}
	if n := metricValue(t, run, "agentrelay_route_health_transitions_total", "f5", "tripped", "rate_limited"); n != 0 {
		t.Errorf("one event's 429s stopped the route %v times", n)
	}
	checkDeadLettered(t, h, "f5-limited", "rate_limited", 429, consumer.DefaultMaxAttempts)
	if h.emu.LedgerLen() != 200 {
		t.Errorf("%d accepted, want 200", h.emu.LedgerLen())
	}
}

// Finding 4: on an ordered route, one event answered 429 for ever holds
// only its own key: every other key is accepted meanwhile, the route is
// never stopped, and the event is dead-lettered within its budget, which
// releases the next event of its key.
func TestOrderedOneEventsRateLimitHoldsOnlyItsKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_f4", true), emulator.WithFaults(badEvents()), emulator.WithRequestLog(10_000))
	r := defaultTimings(h.route("f4", "events.f4.>", h.agent("agtch_f4")))
	r.Ordering = consumer.OrderByConversationKey
	run := h.start(r)
	h.publish("events.f4.x", `{"input":"k 0 `+bad429+`","conversation_key":"k"}`, nil, "f4-k-0")
	h.publish("events.f4.x", `{"input":"k 1","conversation_key":"k"}`, nil, "f4-k-1")
	for i := range 100 {
		h.publish("events.f4.x", fmt.Sprintf(`{"input":"o %d","conversation_key":"o%d"}`, i, i), nil, fmt.Sprintf("f4-o-%d", i))
	}
	testenv.Eventually(t, 10*time.Second, "the other keys accepted", func() bool { return h.emu.LedgerLen() >= 100 })
	if h.emu.Accepted("agtch_f4", "f4-k-1") != 0 {
		t.Fatal("the next event of the limited key ran before it")
	}
	h.waitSettled(150*time.Second, "f4")
	checkDeadLettered(t, h, "f4-k-0", "rate_limited", 429, consumer.DefaultMaxAttempts)
	if h.emu.Accepted("agtch_f4", "f4-k-1") != 1 {
		t.Error("the dead letter did not release the next event of its key")
	}
	if n := metricValue(t, run, "agentrelay_route_health_transitions_total", "f4", "tripped", "rate_limited"); n != 0 {
		t.Errorf("one event's 429s stopped the ordered route %v times", n)
	}
}

// Finding 2: on an ordered route, ten keys whose first events hang look
// like an outage; an event of another key probes the route back, and the
// hanging events are dead-lettered after their timeouts.
func TestOrderedHangingKeysDoNotWedgeTheRoute(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_f2", true), emulator.WithFaults(badEvents()), emulator.WithRequestLog(10_000))
	r := defaultTimings(h.route("f2", "events.f2.>", h.agent("agtch_f2")))
	r.Ordering, r.MaxInFlight = consumer.OrderByConversationKey, 0 // the default
	h.start(r)
	for i := range 10 {
		h.publish("events.f2.x", fmt.Sprintf(`{"input":"h%d 0 %s","conversation_key":"h%d"}`, i, badHang, i), nil, fmt.Sprintf("f2-h%d", i))
	}
	time.Sleep(3 * time.Second) // the hanging calls are under way (the client gives up after 2s here)
	published := time.Now()
	h.publish("events.f2.x", `{"input":"v 0","conversation_key":"v"}`, nil, "f2-v")
	testenv.Eventually(t, 15*time.Second, "the other key accepted", func() bool { return h.emu.Accepted("agtch_f2", "f2-v") == 1 })
	if d := time.Since(published); d > 5*time.Second {
		t.Errorf("the other key waited %v, want within 5s", d.Round(time.Millisecond))
	}
	h.waitSettled(90*time.Second, "f2")
	for i := range 10 {
		checkDeadLettered(t, h, fmt.Sprintf("f2-h%d", i), "timeout", 0, consumer.DefaultMaxTimeouts+3)
	}
}

// Finding 3: on an ordered route, a key whose first event fails for ever
// with 500 events queued behind it holds only itself: events of other
// keys published after them are accepted within seconds, and the key's
// events follow in order once its first is dead-lettered.
func TestOrderedFailingKeyHoldsOnlyItself(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_f3", true), emulator.WithFaults(badEvents()), emulator.WithRequestLog(20_000))
	r := defaultTimings(h.route("f3", "events.f3.>", h.agent("agtch_f3")))
	r.Ordering = consumer.OrderByConversationKey
	r.MaxInFlight = 0 // the default, and its default window
	h.start(r)
	h.publish("events.f3.x", `{"input":"k 0 `+bad500+`","conversation_key":"k"}`, nil, "f3-k-0")
	for i := 1; i <= 500; i++ {
		h.publish("events.f3.x", fmt.Sprintf(`{"input":"k %d","conversation_key":"k"}`, i), nil, fmt.Sprintf("f3-k-%d", i))
	}
	var mu sync.Mutex
	worst := time.Duration(0)
	for i := range 20 {
		published := time.Now()
		key := fmt.Sprintf("f3-o-%d", i)
		h.publish("events.f3.x", fmt.Sprintf(`{"input":"o%d 0","conversation_key":"o%d"}`, i, i), nil, key)
		testenv.Eventually(t, 10*time.Second, "another key accepted", func() bool { return h.emu.Accepted("agtch_f3", key) == 1 })
		mu.Lock()
		worst = max(worst, time.Since(published))
		mu.Unlock()
		time.Sleep(500 * time.Millisecond)
	}
	if worst > 5*time.Second {
		t.Errorf("another key waited up to %v behind the failing key, want at most 5s", worst.Round(time.Millisecond))
	}
	h.waitSettled(120*time.Second, "f3")
	checkDeadLettered(t, h, "f3-k-0", "server_error", 500, consumer.DefaultMaxAttempts)
	next := 1
	for _, e := range h.emu.Ledger() {
		if k, n, ok := strings.Cut(e.Input, " "); ok && k == "k" {
			if n != fmt.Sprint(next) {
				t.Fatalf("key k: event %s accepted when %d was due", n, next)
			}
			next++
		}
	}
	if next != 501 {
		t.Errorf("key k: %d of 500 events accepted", next-1)
	}
}

// Finding 9: an API answering in 6 s, inside the client timeout, never
// costs an ordered route's owner its pin: every event is called once, and
// never more than max_in_flight at once.
func TestOrderedSlowAPINeverCostsThePin(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_f9", true), emulator.WithFaults(emulator.Faults{Latency: 6 * time.Second}), emulator.WithRequestLog(10_000))
	client, err := agentapi.NewClient(h.apiURL, agentapi.ClientOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	id, _ := agentapi.ParseTriggerID("agtch_f9")
	agent, _ := client.Agent(id, agentapi.StaticToken(agentapi.NewSecret(tok)))
	counting := &countingAgent{Agent: agent}
	r := defaultTimings(h.route("f9", "events.f9.>", counting))
	r.Ordering = consumer.OrderByConversationKey
	logs := &logRecorder{}
	h.startWith(func(o *consumer.Options) { o.Logger = logs.logger() }, r)
	const n = 24 // three rounds of max_in_flight 8 calls
	for i := range n {
		h.publish("events.f9.x", fmt.Sprintf(`{"input":"c%d","conversation_key":"c%d"}`, i, i), nil, fmt.Sprintf("f9-%d", i))
	}
	h.waitSettled(90*time.Second, "f9")
	for key, calls := range requestsByKey(h.emu) {
		if calls != 1 {
			t.Errorf("%s called %d times, want once", key, calls)
		}
	}
	counting.mu.Lock()
	defer counting.mu.Unlock()
	if counting.max > r.MaxInFlight {
		t.Errorf("%d calls at once, want at most max_in_flight %d", counting.max, r.MaxInFlight)
	}
	if strings.Contains(logs.String(), "may no longer own") {
		t.Error("the owner thought it lost its pin while its slots were busy")
	}
}

// Finding 10: during a rolling change of max_in_flight, a replica that may
// hold fewer than the consumer's window takes the route over all the same
// (it adopts the window) when the owner is killed holding all of it.
func TestOrderedTakeoverAdoptsALargerWindow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_f10", true), emulator.WithFaults(emulator.Faults{Latency: 300 * time.Millisecond}))
	small := defaultTimings(h.route("f10", "events.f10.>", h.agent("agtch_f10")))
	small.Ordering, small.MaxInFlight = consumer.OrderByConversationKey, 2
	big := small
	big.MaxInFlight = 8 // the consumer's window becomes big's
	// The backlog is there before the owner starts: published while it
	// runs, on a loaded machine, it could be called off as fast as it came.
	const n = 200
	for i := range n {
		h.publish("events.f10.x", fmt.Sprintf(`{"input":"c%d 0","conversation_key":"c%d"}`, i, i), nil, fmt.Sprintf("f10-%d", i))
	}
	owner := h.start(big)
	testenv.Eventually(t, 10*time.Second, "the owner holds its whole window", func() bool {
		return h.consumerInfo("agentrelay-f10").NumAckPending >= big.WithDefaults().MaxAckPending
	})
	h.start(small)   // binds after the owner: the consumer's window becomes small's again
	owner.nc.Close() // killed: no drain, no hand-back
	// The latency only kept the owner's window full until it died; what is
	// left is the takeover (the dead owner's events come back after the
	// default ack wait) and the backlog at max_in_flight 2.
	h.emu.SetFaults(emulator.Faults{})
	h.waitSettled(90*time.Second, "f10")
	if h.emu.LedgerLen() != n {
		t.Errorf("%d accepted, want %d", h.emu.LedgerLen(), n)
	}
}

// Finding 6: a token rotated to one the HTTP client cannot send (a control
// character in it) is a token problem: the route stops as for a 401, no
// event is sent or dead-lettered, and the route resumes once the token is
// fixed.
func TestAnUnsendableTokenStopsTheRouteAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_f6", true), emulator.WithRequestLog(1000))
	path := t.TempDir() + "/token"
	writeFile(t, path, tok)
	ft, err := agentapi.NewFileToken(path, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r := defaultTimings(h.route("f6", "events.f6.>", h.agent("agtch_f6", ft)))
	run := h.start(r)
	h.publish("events.f6.x", `{"input":"before"}`, nil, "f6-0")
	h.waitSettled(10*time.Second, "f6")
	writeFile(t, path, "tok-\x1b[31m-test")
	time.Sleep(200 * time.Millisecond) // the file token re-reads every 50ms
	sent := h.emu.Stats().Requests
	for i := 1; i <= 20; i++ {
		h.publish("events.f6.x", `{"input":"during"}`, nil, fmt.Sprintf("f6-%d", i))
	}
	testenv.Eventually(t, 10*time.Second, "the route stopped for its token", func() bool {
		return metricValue(t, run, "agentrelay_route_health", "f6", "unauthorized") == 1
	})
	if n := h.emu.Stats().Requests - sent; n != 0 {
		t.Errorf("%d requests reached the API with a token the client cannot send", n)
	}
	writeFile(t, path, tok)
	h.waitSettled(20*time.Second, "f6")
	if got := len(h.deadLetters()); got != 0 {
		t.Errorf("%d dead letters, want none", got)
	}
	if n := h.emu.LedgerLen(); n != 21 {
		t.Errorf("%d accepted, want 21", n)
	}
}
