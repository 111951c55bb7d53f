package consumer_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/mapping"
	"github.com/agentrelay/agentrelay/internal/routestatus"
	"github.com/agentrelay/agentrelay/internal/testenv"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// Per-agent isolation (issue 20): on a route that serves many agents, a
// condition of one agent stops that agent's events only. The route's
// consumer is never paused for it, so the other agents' events flow on
// every replica; the agent's events wait for its probes and are accepted
// once it recovers. Conditions that several agents meet while nothing gets
// through are the route's after all.

// manyAgentsRoute is a route with the default timings whose events name
// their agent by the subject's third token: events.<name>.<trigger id>.
func (h *harness) manyAgentsRoute(name string, ids ...string) consumer.Route {
	h.t.Helper()
	m, err := mapping.Compile(mapping.Spec{TriggerID: `tokens[2]`})
	if err != nil {
		h.t.Fatal(err)
	}
	agents := agentsByID{}
	for _, id := range ids {
		agents[id] = h.agent(id)
	}
	r := defaultTimings(h.route(name, "events."+name+".*", nil))
	r.Agent, r.Agents = nil, agents
	r.Contract.Mapping = m
	r.Contract.AllowedTriggerIDs = triggerglob.MustCompile("agtch_*")
	return r
}

// watchPaused records whether the route's consumer is ever paused while
// the test runs.
func (h *harness) watchPaused(durable string) *atomic.Bool {
	var paused atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	h.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if c, err := h.nats.JS.Consumer(ctx, stream, durable); err == nil {
				if info, err := c.Info(ctx); err == nil && info.Paused {
					paused.Store(true)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return &paused
}

// stoppedAgent returns the status of agent id on whichever relay lists it
// as stopped.
func stoppedAgent(relays []*running, route, id string) (consumer.AgentStatus, *running, bool) {
	for _, r := range relays {
		st, _ := r.relay.RouteStatus(route, 0)
		for _, a := range st.Agents {
			if a.TriggerID == id {
				return a, r, true
			}
		}
	}
	return consumer.AgentStatus{}, nil, false
}

func TestAnAgentThatIsNotRunnableStopsOnlyItsOwnEvents(t *testing.T) {
	t.Parallel()
	ok := []string{"agtch_ok1", "agtch_ok2", "agtch_ok3"}
	h := newHarness(t, emulator.WithTrigger(ok[0], true), emulator.WithTrigger(ok[1], true), emulator.WithTrigger(ok[2], true),
		emulator.WithTrigger("agtch_off", false), emulator.WithRequestLog(10_000))
	r := h.manyAgentsRoute("many", append(ok, "agtch_off")...)
	paused := h.watchPaused("agentrelay-many")
	relays := []*running{h.start(r), h.start(r)}

	const perAgent = 30
	start := time.Now()
	for i := range perAgent {
		for _, id := range ok {
			h.publish("events.many."+id, fmt.Sprintf(`{"input":"%s %d"}`, id, i), nil, fmt.Sprintf("%s-%d", id, i))
		}
		if i < 10 {
			h.publish("events.many.agtch_off", fmt.Sprintf(`{"input":"off %d"}`, i), nil, fmt.Sprintf("off-%d", i))
		}
	}
	testenv.Eventually(t, 20*time.Second, "the runnable agents' events accepted", func() bool {
		for _, id := range ok {
			for i := range perAgent {
				if h.emu.Accepted(id, fmt.Sprintf("%s-%d", id, i)) != 1 {
					return false
				}
			}
		}
		return true
	})
	t.Logf("the runnable agents' %d events accepted in %v", len(ok)*perAgent, time.Since(start).Round(time.Millisecond))

	st, owner, found := stoppedAgent(relays, "many", "agtch_off")
	if !found {
		t.Fatal("no replica lists agtch_off as stopped")
	}
	if st.Health != "not_runnable" || st.Cause == nil || st.Cause.Status != 409 {
		t.Errorf("agtch_off's status %+v, want not_runnable after a 409", st)
	}
	if rs, _ := owner.relay.RouteStatus("many", 0); rs.Health != "healthy" || rs.PausedBy != "" {
		t.Errorf("the route is %q (paused by %q), want healthy and running", rs.Health, rs.PausedBy)
	}
	if v := metricValue(t, owner, "agentrelay_agent_stopped", "many", "agtch_off", "not_runnable"); v != 1 {
		t.Errorf("agentrelay_agent_stopped for agtch_off = %v, want 1", v)
	}
	if v := metricValue(t, owner, "agentrelay_route_agents_stopped", "many", "not_runnable"); v != 1 {
		t.Errorf("agentrelay_route_agents_stopped{not_runnable} = %v, want 1", v)
	}

	// While it is stopped, the agent sees its probes and nothing more:
	// at most one call per probe interval (at least 1s) per replica.
	before, since := h.requestsFor("agtch_off"), time.Now()
	time.Sleep(4 * time.Second) // an observation window of probes
	if n, most := h.requestsFor("agtch_off")-before, 2*(int(time.Since(since)/time.Second)+1); n > most {
		t.Errorf("agtch_off was called %d times in %v while stopped, want at most %d (its probes)", n, time.Since(since).Round(time.Millisecond), most)
	}

	h.emu.SetRunnable("agtch_off", true)
	h.waitSettled(30*time.Second, "many")
	for i := range 10 {
		if n := h.emu.Accepted("agtch_off", fmt.Sprintf("off-%d", i)); n != 1 {
			t.Errorf("off-%d accepted %d times, want 1", i, n)
		}
	}
	if n := len(h.deadLetters()); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	if paused.Load() {
		t.Error("the route's consumer was paused for one agent's condition")
	}
	if v := metricValue(t, owner, "agentrelay_route_agents_stopped", "many", "not_runnable"); v != 0 {
		t.Errorf("agentrelay_route_agents_stopped{not_runnable} = %v after the agent recovered, want 0", v)
	}
}

// An agent that hangs is an outage of its own: its events wait for its
// probes instead of timing out until they are dead-lettered, and the
// other agents' events never wait for it.
func TestAnAgentThatHangsStopsOnlyItsOwnEvents(t *testing.T) {
	t.Parallel()
	ok := []string{"agtch_fast1", "agtch_fast2"}
	h := newHarness(t, emulator.WithTrigger(ok[0], true), emulator.WithTrigger(ok[1], true), emulator.WithTrigger("agtch_hang", true),
		emulator.WithFaults(emulator.Faults{HangFor: time.Minute, ByInput: []emulator.InputFault{
			{Marker: "#hang", Fault: emulator.Fault{Kind: emulator.FaultHang, TriggerID: "agtch_hang"}},
		}}), emulator.WithRequestLog(10_000))
	r := h.manyAgentsRoute("hang", append(ok, "agtch_hang")...)
	paused := h.watchPaused("agentrelay-hang")
	rn := h.start(r)

	for i := range 10 {
		h.publish("events.hang.agtch_hang", fmt.Sprintf(`{"input":"h %d #hang"}`, i), nil, fmt.Sprintf("hang-%d", i))
	}
	worst := time.Duration(0)
	for i := range 20 {
		id := ok[i%2]
		key := fmt.Sprintf("%s-%d", id, i)
		published := time.Now()
		h.publish("events.hang."+id, fmt.Sprintf(`{"input":"%s %d"}`, id, i), nil, key)
		testenv.Eventually(t, 10*time.Second, "a healthy agent's event accepted", func() bool { return h.emu.Accepted(id, key) == 1 })
		worst = max(worst, time.Since(published))
		time.Sleep(250 * time.Millisecond)
	}
	if worst > 5*time.Second {
		t.Errorf("a healthy agent's event waited up to %v, want at most 5s", worst.Round(time.Millisecond))
	}
	testenv.Eventually(t, 15*time.Second, "agtch_hang stopped by an outage of its own", func() bool {
		st, _, found := stoppedAgent([]*running{rn}, "hang", "agtch_hang")
		return found && st.Health == "outage"
	})
	if paused.Load() {
		t.Error("the route's consumer was paused for one agent's outage")
	}
	if rs, _ := rn.relay.RouteStatus("hang", 0); rs.Health != "healthy" {
		t.Errorf("the route is %q, want healthy", rs.Health)
	}
	if n := len(h.deadLetters()); n != 0 {
		t.Errorf("%d of the hanging agent's events dead-lettered while it was stopped, want none", n)
	}
}

// When several agents meet the same condition and nothing gets through,
// the condition is the route's (a channel that is not runnable, a revoked
// shared token): the route stops on every replica, and resumes when a
// probe gets through.
func TestAConditionEveryAgentMeetsStopsTheRoute(t *testing.T) {
	t.Parallel()
	ids := []string{"agtch_c1", "agtch_c2", "agtch_c3", "agtch_c4"}
	opts := []emulator.Option{emulator.WithRequestLog(10_000)}
	for _, id := range ids {
		opts = append(opts, emulator.WithTrigger(id, false))
	}
	h := newHarness(t, opts...)
	r := h.manyAgentsRoute("all", ids...)
	rn := h.start(r)
	for i := range 5 {
		for _, id := range ids {
			h.publish("events.all."+id, fmt.Sprintf(`{"input":"%s %d"}`, id, i), nil, fmt.Sprintf("%s-%d", id, i))
		}
	}
	testenv.Eventually(t, 15*time.Second, "the route stopped, its consumer paused by route health", func() bool {
		rs, _ := rn.relay.RouteStatus("all", 0)
		info := h.consumerInfo("agentrelay-all")
		return rs.Health == "not_runnable" && info.Paused && info.Config.PauseUntil != nil && routestatus.IsHealthPause(*info.Config.PauseUntil)
	})
	for _, id := range ids {
		h.emu.SetRunnable(id, true)
	}
	h.waitSettled(30*time.Second, "all")
	for _, id := range ids {
		for i := range 5 {
			if n := h.emu.Accepted(id, fmt.Sprintf("%s-%d", id, i)); n != 1 {
				t.Errorf("%s-%d accepted %d times, want 1", id, i, n)
			}
		}
	}
	if n := len(h.deadLetters()); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// On an ordered route, a stopped agent's events wait holding their keys,
// not the route's slots: the other agents' keys run on, each in order, and
// the agent's events follow in order once it recovers.
func TestOrderedRouteAnAgentThatIsNotRunnableHoldsOnlyItsKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_on", true), emulator.WithTrigger("agtch_down", false), emulator.WithRequestLog(10_000))
	r := h.manyAgentsRoute("omany", "agtch_on", "agtch_down")
	r.Ordering = consumer.OrderByConversationKey
	r.MaxInFlight = 4 // fewer slots than the stopped agent has keys
	h.start(r)
	const keys, perKey = 8, 5
	for i := range perKey {
		for k := range keys {
			for _, id := range []string{"agtch_down", "agtch_on"} {
				h.publish("events.omany."+id, fmt.Sprintf(`{"input":"%s/k%d %d","conversation_key":"%s/k%d"}`, id, k, i, id, k), nil, fmt.Sprintf("%s-k%d-%d", id, k, i))
			}
		}
	}
	testenv.Eventually(t, 30*time.Second, "the running agent's events accepted", func() bool {
		n := 0
		for _, e := range h.emu.Ledger() {
			if e.TriggerID == "agtch_on" {
				n++
			}
		}
		return n == keys*perKey
	})
	h.emu.SetRunnable("agtch_down", true)
	h.waitSettled(60*time.Second, "omany")
	for _, id := range []string{"agtch_on", "agtch_down"} {
		checkOrderOf(t, h.emu, id, 0, perKey)
		for k := range keys {
			for i := range perKey {
				if n := h.emu.Accepted(id, fmt.Sprintf("%s-k%d-%d", id, k, i)); n != 1 {
					t.Errorf("%s-k%d-%d accepted %d times, want 1", id, k, i, n)
				}
			}
		}
	}
	if n := len(h.deadLetters()); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}
