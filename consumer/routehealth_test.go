package consumer_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/routestatus"
	"github.com/agentrelay/agentrelay/internal/testenv"
	"github.com/agentrelay/agentrelay/internal/testenv/wait"
)

// Route health with the timings users get: the default retry policy,
// breaker settings and AckWait.
func defaultTimings(r consumer.Route) consumer.Route {
	r.Retry, r.Breaker, r.AckWait = consumer.RetryPolicy{}, consumer.BreakerSettings{}, 0
	return r
}

// requestsByKey counts the calls the API saw per Idempotency-Key.
func requestsByKey(emu *emulator.Emulator) map[string]int {
	out := map[string]int{}
	for _, q := range emu.Requests() {
		out[q.Header.Get("Idempotency-Key")]++
	}
	return out
}

// An outage stops the route on every replica: the consumer is paused, the
// stream keeps what was not delivered, and the API sees only probes. The
// first probe after the API recovers resumes the route, the backlog drains,
// no event is dead-lettered, and each message but the probing ones was
// called at most a small constant number of times.
func TestOutageStopsTheRouteEverywhereAndAProbeResumesIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_o", true), emulator.WithRequestLog(10_000),
		emulator.WithFaults(emulator.Faults{ServerErrorRate: 1}))
	r := defaultTimings(h.route("o", "events.o.>", h.agent("agtch_o")))
	a := h.start(r)
	b := h.start(r)
	const n = 200
	for i := range n {
		h.publish("events.o.x", `{"input":"x"}`, nil, fmt.Sprintf("o-%d", i))
	}
	outage := func(run *running) bool { return metricValue(t, run, "agentrelay_route_health", "o", "outage") == 1 }
	testenv.Eventually(t, 10*time.Second, "the route stopped for an outage", func() bool { return outage(a) || outage(b) })
	testenv.Eventually(t, 5*time.Second, "the consumer paused for every replica", func() bool {
		return h.consumerInfo("agentrelay-o").Paused
	})
	// While stopped: probes only, one per replica per interval (1s, 2s,
	// 3s), and most of the backlog still undelivered in the stream.
	before := h.emu.Stats().Requests
	time.Sleep(3 * time.Second) // an observation window, not a wait for a condition
	if probes := h.emu.Stats().Requests - before; probes > 6 {
		t.Errorf("%d calls in 3s while the route was stopped, want only probes (at most 6)", probes)
	}
	if info := h.consumerInfo("agentrelay-o"); info.NumPending < n/2 {
		t.Errorf("only %d of %d messages left in the stream: the route kept taking deliveries", info.NumPending, n)
	}

	h.emu.SetFaults(emulator.Faults{})
	h.waitSettled(20*time.Second, "o")
	if h.emu.LedgerLen() != n {
		t.Errorf("%d accepted, want %d", h.emu.LedgerLen(), n)
	}
	if dl := h.deadLetters(); len(dl) != 0 {
		t.Errorf("%d dead letters after an outage, want none", len(dl))
	}
	heavy := 0
	for key, calls := range requestsByKey(h.emu) {
		if calls > 3 {
			heavy++
			t.Logf("%s: %d calls", key, calls)
		}
	}
	if heavy > 2 { // the messages held to probe with: one per replica
		t.Errorf("%d messages called more than 3 times, want only the probing ones (at most 2)", heavy)
	}
	if h.consumerInfo("agentrelay-o").Paused {
		t.Error("consumer still paused after recovery")
	}
	// Every replica is healthy again, the one left with no message to
	// probe with too: it sees the others' events accepted.
	testenv.Eventually(t, 5*time.Second, "both replicas healthy after recovery", func() bool {
		return metricValue(t, a, "agentrelay_route_health", "o", "healthy")+metricValue(t, b, "agentrelay_route_health", "o", "healthy") == 2
	})
}

// A 409 (agent not runnable) stops its own route at once, and only that
// route; the events wait in the stream, none is dead-lettered, and they
// are all triggered once the agent is runnable.
func TestNotRunnableAgentStopsOnlyItsRoute(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_p", false), emulator.WithTrigger("agtch_q", true))
	p := defaultTimings(h.route("p", "events.p.>", h.agent("agtch_p")))
	q := defaultTimings(h.route("q", "events.q.>", h.agent("agtch_q")))
	run := h.start(p, q)
	for i := range 50 {
		h.publish("events.p.x", `{"input":"x"}`, nil, fmt.Sprintf("p-%d", i))
		h.publish("events.q.x", `{"input":"x"}`, nil, fmt.Sprintf("q-%d", i))
	}
	wait.For(t, 10*time.Second, "route p stopped as not runnable", func() bool {
		return metricValue(t, run, "agentrelay_route_health", "p", "not_runnable") == 1
	})
	// Calls already under way when the first 409 came back may still get
	// theirs; from then on, only a probe, at most one per probe interval.
	stopped, before := time.Now(), h.requestsFor("agtch_p")
	h.waitSettled(10*time.Second, "q")
	if got := metricValue(t, run, "agentrelay_route_health", "q", "healthy"); got != 1 {
		t.Errorf("route q health healthy = %v, want 1", got)
	}
	if got := metricValue(t, run, "agentrelay_route_health", "p", "not_runnable"); got != 1 {
		t.Errorf("route p health not_runnable = %v, want 1 until the agent is runnable", got)
	}
	probes, most := h.requestsFor("agtch_p")-before, 1+int(time.Since(stopped)/consumer.DefaultProbeInterval)
	if probes > most {
		t.Errorf("%d calls to the not-runnable agent in %v while its route was stopped, want probes only (at most %d)", probes, time.Since(stopped).Round(time.Millisecond), most)
	}
	h.emu.SetRunnable("agtch_p", true)
	h.waitSettled(15*time.Second, "p")
	if h.emu.LedgerLen() != 100 || len(h.deadLetters()) != 0 {
		t.Errorf("%d accepted and %d dead letters, want 100 and none", h.emu.LedgerLen(), len(h.deadLetters()))
	}
	if got := metricValue(t, run, "agentrelay_route_health_transitions_total", "p", "resumed", "not_runnable"); got != 1 {
		t.Errorf("resumed transitions = %v, want 1", got)
	}
}

// On an idle route, the replica whose probe got through takes the only
// event; the others have nothing to probe with. They resume all the same
// when they see its event accepted, instead of staying stopped (and
// paging) until traffic comes back.
func TestAReplicaWithNothingToProbeResumesWhenAnotherReplicasEventIsAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_i", false))
	r := defaultTimings(h.route("i", "events.i.>", h.agent("agtch_i")))
	a := h.start(r)
	b := h.start(r)
	h.publish("events.i.x", `{"input":"x"}`, nil, "i-1")
	notRunnable := func(run *running) bool {
		return metricValue(t, run, "agentrelay_route_health", "i", "not_runnable") == 1
	}
	testenv.Eventually(t, 10*time.Second, "both replicas stopped as not runnable", func() bool { return notRunnable(a) && notRunnable(b) })
	h.emu.SetRunnable("agtch_i", true)
	h.waitSettled(15*time.Second, "i")
	testenv.Eventually(t, 5*time.Second, "both replicas healthy after the one event was accepted", func() bool {
		return metricValue(t, a, "agentrelay_route_health", "i", "healthy")+metricValue(t, b, "agentrelay_route_health", "i", "healthy") == 2
	})
	if h.emu.LedgerLen() != 1 || len(h.deadLetters()) != 0 {
		t.Errorf("%d accepted and %d dead letters, want 1 and none", h.emu.LedgerLen(), len(h.deadLetters()))
	}
}

// With nothing in flight, a drain takes a round trip, not the rest of the
// outstanding pull's expiry (3s here).
func TestDrainWithNothingInFlightDoesNotWaitForPulls(t *testing.T) {
	h := newHarness(t, emulator.WithTrigger("agtch_z", true))
	r := h.route("z", "events.z.>", h.agent("agtch_z"))
	run := h.start(r)
	h.publish("events.z.x", `{"input":"x"}`, nil, "z-1")
	h.waitSettled(5*time.Second, "z")
	start := time.Now()
	run.stop(t)
	if d := time.Since(start); d >= time.Second {
		t.Errorf("drain with nothing in flight took %v, want under 1s", d)
	}
	// Nothing the unsubscribed pulls might still have delivered is lost:
	// a message published now is triggered by a new replica.
	h.publish("events.z.x", `{"input":"y"}`, nil, "z-2")
	h.start(r)
	h.waitSettled(10*time.Second, "z")
	if h.emu.LedgerLen() != 2 {
		t.Errorf("%d accepted, want 2", h.emu.LedgerLen())
	}
}

// An operator's pause stops everything (issue 17, finding 7): route
// health leaves the pause alone, no probe calls the API while it holds, the
// message held to probe with goes back, and the log claims no resume.
// When the operator resumes, the route probes and resumes.
func TestOperatorPauseStopsProbesAndIsLeftAlone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_w", false))
	r := defaultTimings(h.route("w", "events.w.>", h.agent("agtch_w")))
	logs := &logRecorder{}
	run := h.startWith(func(o *consumer.Options) { o.Logger = logs.logger() }, r)
	h.publish("events.w.x", `{"input":"x"}`, nil, "w-1")
	testenv.Eventually(t, 10*time.Second, "route stopped by route health", func() bool {
		return metricValue(t, run, "agentrelay_route_health", "w", "not_runnable") == 1 && h.consumerInfo("agentrelay-w").Paused
	})
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	if _, err := h.nats.JS.PauseConsumer(ctxTimeout(t, 5*time.Second), stream, "agentrelay-w", until); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the replica saw the operator's pause and let go of what it held", func() bool {
		st, _ := run.relay.RouteStatus("w", 0)
		return st.PausedBy == consumer.PausedByOperator && st.InFlight == 0
	})
	h.emu.SetRunnable("agtch_w", true)
	before := h.requestsFor("agtch_w")
	time.Sleep(4 * time.Second) // an observation window: more than a probe interval, nothing to wait for
	if calls := h.requestsFor("agtch_w") - before; calls != 0 {
		t.Errorf("%d calls while an operator paused the route, want none", calls)
	}
	if strings.Contains(logs.String(), "probe succeeded") {
		t.Error("the log claims a resume while the operator's pause holds")
	}
	info := h.consumerInfo("agentrelay-w")
	if !info.Paused || info.Config.PauseUntil == nil || !info.Config.PauseUntil.Equal(until) {
		t.Fatalf("the operator's pause until %v became paused=%v until %v", until, info.Paused, info.Config.PauseUntil)
	}

	if _, err := h.nats.JS.ResumeConsumer(ctxTimeout(t, 5*time.Second), stream, "agentrelay-w"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "accepted after the operator resumed", func() bool { return h.emu.Accepted("agtch_w", "w-1") == 1 })
	testenv.Eventually(t, 5*time.Second, "route health resumed", func() bool {
		return metricValue(t, run, "agentrelay_route_health", "w", "healthy") == 1
	})
}

// max_rate caps a route's calls per second on a replica.
func TestMaxRateCapsCalls(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_m", true))
	r := defaultTimings(h.route("m", "events.m.>", h.agent("agtch_m")))
	r.MaxRate = 10
	const n = 25
	for i := range n {
		h.publish("events.m.x", `{"input":"x"}`, nil, fmt.Sprintf("m-%d", i))
	}
	start := time.Now()
	h.start(r)
	h.waitSettled(20*time.Second, "m")
	// A burst of one, then one call every 100ms: 25 calls cannot take less
	// than 2.4s, however fast the API answers.
	if d := time.Since(start); d < 2400*time.Millisecond {
		t.Errorf("%d calls at max_rate 10/s took %v, want at least 2.4s", n, d)
	}
	if h.emu.LedgerLen() != n {
		t.Errorf("%d accepted, want %d", h.emu.LedgerLen(), n)
	}
}

// The server has no compare-and-set for a pause: route health's extension
// of its pause, decided just before an operator paused the consumer, can
// land after the operator's and replace it. The replica puts the
// operator's pause back.
func TestAnOperatorsPauseReplacedByRouteHealthIsPutBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_wo", false))
	r := defaultTimings(h.route("wo", "events.wo.>", h.agent("agtch_wo")))
	run := h.start(r)
	h.publish("events.wo.x", `{"input":"x"}`, nil, "wo-1")
	testenv.Eventually(t, 10*time.Second, "route stopped by route health", func() bool {
		return metricValue(t, run, "agentrelay_route_health", "wo", "not_runnable") == 1 && h.consumerInfo("agentrelay-wo").Paused
	})
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	if _, err := h.nats.JS.PauseConsumer(ctxTimeout(t, 5*time.Second), stream, "agentrelay-wo", until); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the replica saw the operator's pause", func() bool {
		st, _ := run.relay.RouteStatus("wo", 0)
		return st.PausedBy == consumer.PausedByOperator
	})
	// The late extension, as the replica would write it.
	late := routestatus.HealthPauseUntil(time.Now().Add(5*time.Second), 3)
	if _, err := h.nats.JS.PauseConsumer(ctxTimeout(t, 5*time.Second), stream, "agentrelay-wo", late); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the operator's pause put back", func() bool {
		info := h.consumerInfo("agentrelay-wo")
		return info.Paused && info.Config.PauseUntil != nil && info.Config.PauseUntil.Equal(until)
	})
	st, _ := run.relay.RouteStatus("wo", 0)
	if st.PausedBy != consumer.PausedByOperator {
		t.Errorf("paused by %q, want the operator", st.PausedBy)
	}
}
