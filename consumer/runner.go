package consumer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/agentrelay/agentrelay/internal/observe"
)

// runner relays one route on this replica. Each concern is a piece of its
// own: the engine pulls and keeps the route's slots filled (engine.go,
// pull.go, slots.go); the pipeline handles each message (pipeline.go) and
// settles it (settle.go) by Decide; the policy says whether the route is
// ordered (policy.go, ordered.go); route health stops and probes it
// (health.go, gate.go, fleet.go), each message's own failures are the
// ledger's (ledger.go); binding and observing the consumer are bind.go's
// and observe.go's.
type runner struct {
	relay  *Relay
	route  Route
	log    *slog.Logger
	m      observe.RouteObserver
	eng    *engine
	policy policy
	healthScope
	agents  *agentHealths // each agent's health, on a route that serves many; else nil
	fleet   *fleetGate
	ledger  *ledger
	tracing *routeTracing // nil with tracing off
	rate    *rate.Limiter // nil without MaxRate
	bound   binding
	watch   watch
	life    lifecycle
}

// lifecycle is how a runner's handlers learn that the relay drains, and
// that route health changed.
type lifecycle struct {
	drainStarted chan struct{}   // closed when the drain begins
	callCtx      context.Context // canceled when the drain grace runs out
	cancelCalls  context.CancelFunc
	changed      broadcast // route health changed
}

// broadcast wakes every waiter at once: wait returns a channel that the
// next notify closes.
type broadcast struct {
	mu sync.Mutex // guards ch
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
	b.mu.Unlock()
}

func newRunner(r *Relay, rt Route) *runner {
	rn := &runner{
		relay:  r,
		route:  rt,
		log:    routeLogger(r.log, rt),
		m:      r.opts.Observer.ObserveRoute(rt.Name),
		ledger: newLedger(),
	}
	rn.health = newHealth(rt.Breaker, rt.MaxInFlight)
	rn.health.outageElsewhere = func() bool { return r.outageElsewhere(rn) }
	rn.life.drainStarted = make(chan struct{})
	rn.life.callCtx, rn.life.cancelCalls = context.WithCancel(context.Background())
	rn.watch.acceptLog.rate = r.opts.LogAccepted
	rn.tracing = newRouteTracing(r.opts.TracerProvider, rt)
	if rt.MaxRate > 0 {
		rn.rate = rate.NewLimiter(rate.Limit(rt.MaxRate), max(1, int(rt.MaxRate/10)))
	}
	rn.eng = newEngine(rn, rn.m, rn.log, r.opts, rt.AckWait)
	if rt.Ordering == OrderByConversationKey {
		rn.policy = newOrdered(rn.eng, orderedDeps{
			route:    rt,
			decode:   rn.decode,
			limit:    func() int { return rn.health.state(time.Now()).Limit },
			consumer: rn.bound.consumer,
			credible: rn.bound.credible,
			failures: func(seq uint64) int { f, _ := rn.ledger.counts(seq); return f },
			nc:       r.js.Conn(),
			stopping: rn.life.drainStarted,
			log:      rn.log,
			m:        rn.m,
		})
	} else {
		rn.policy = unordered{eng: rn.eng}
	}
	rn.eng.attach(newPuller(rn.eng, r.js, rt, r.opts, rn.policy), rt.Ordering == OrderByConversationKey)
	rn.gate = newGate(rn.policy.gateBound())
	if rt.Agents != nil {
		rn.agents = newAgentHealths(rt)
	}
	rn.fleet = newFleetGate(rn)
	rn.m.SetInFlightLimit(rt.MaxInFlight)
	rn.m.Prime(knownLabels())
	return rn
}

// routeLogger is the route's logger: a route that serves many agents names
// each event's trigger id where it logs one.
func routeLogger(log *slog.Logger, rt Route) *slog.Logger {
	log = log.With("route", rt.Name, "stream", rt.Stream)
	if rt.Agents == nil && rt.Agent != nil {
		log = log.With("trigger_id", rt.Agent.ID().String())
	}
	return log
}

// deliver takes a message that took a slot (engineOwner).
func (rn *runner) deliver(m *pulledMsg) { rn.policy.deliver(m) }

// plan says how much to pull now (engineOwner): the free slots under the
// route's limit, which AIMD lowers under 429s; while the route is stopped,
// only a message to probe with, when no fresh one waits and a probe is
// due, so that messages left in the stream spend no delivery attempt.
func (rn *runner) plan(now time.Time) pullPlan {
	hs := rn.health.state(now)
	limit := min(rn.route.MaxInFlight, hs.Limit)
	rn.m.SetInFlightLimit(limit)
	pl := pullPlan{limit: limit, lowMark: max(1, rn.route.MaxInFlight/4), lookahead: max(1, rn.route.MaxInFlight/8)}
	stopped := hs.stopped()
	if stopped {
		pl = rn.probePlan(hs, now)
	}
	return rn.policy.plan(pl, stopped)
}

func (rn *runner) probePlan(hs healthState, now time.Time) pullPlan {
	if !hs.OperatorPause.IsZero() || rn.gate.hasFresh() || !hs.FreshMayProbe {
		if wait := hs.NextProbe.Sub(now); wait > 0 && hs.OperatorPause.IsZero() {
			return pullPlan{none: true, wait: wait}
		}
		return pullPlan{none: true}
	}
	// A few, so that the next probes are fresh ones too and the pause
	// they extend need not lapse again for a while.
	return pullPlan{limit: rn.eng.active() + max(1, rn.gate.maxHeld), lowMark: 1}
}

// transition makes a health transition visible and acts on it fleet-wide.
// fresh says whether the call behind it was a fresh message's.
func (rn *runner) transition(tr transition, out Outcome, fresh bool) {
	if tr == noChange {
		return
	}
	now := time.Now()
	hs := rn.health.state(now)
	cond := hs.Condition
	if tr == resumed {
		cond = hs.Was
	}
	rn.m.SetHealth(hs.Condition.String(), conditionLabels())
	rn.m.HealthTransition(tr.String(), cond.String())
	attrs := []any{"condition", cond.String(), "class", string(out.Class)}
	if out.Status != 0 {
		attrs = append(attrs, "status", out.Status)
	}
	switch tr {
	case becameStopped:
		rn.log.Warn("route stopped: route-wide condition; probing with single events", append(attrs, "next_probe_in", hs.RetryIn)...)
	case probeFailed:
		rn.log.Info("probe failed; route stays stopped", append(attrs, "next_probe_in", hs.RetryIn, "probe_was_fresh", fresh,
			"stopped_for", now.Sub(hs.Since).Round(time.Millisecond))...)
	case resumed:
		rn.log.Info("probe succeeded: route resumed", append(attrs, "stopped_for", now.Sub(hs.WasSince).Round(time.Millisecond))...)
	}
	// A failed probe proves an outage or a rate limit again only when it
	// was a fresh message's: the pause is extended then, and otherwise
	// lapses, so that a fresh message can be pulled to probe with.
	rn.fleet.apply(tr, hs, tr != probeFailed || fresh || hs.Condition.anyMessageShows())
	rn.notify()
}

// resumeSeen resumes the route, stopped since since, on evidence from
// other replicas (see fleetGate.observe and progress): why says which.
func (rn *runner) resumeSeen(since time.Time, why string) {
	if rn.health.resumeSeen(since) != resumed {
		return
	}
	now := time.Now()
	hs := rn.health.state(now)
	rn.m.SetHealth(hs.Condition.String(), conditionLabels())
	rn.m.HealthTransition(resumed.String(), hs.Was.String())
	rn.log.Info("route resumed: "+why,
		"condition", hs.Was.String(), "stopped_for", now.Sub(hs.WasSince).Round(time.Millisecond))
	rn.fleet.apply(resumed, hs, true)
	rn.notify()
}

// adopt stops the route for cond, found by another replica: without
// pausing the consumer again (it is paused).
func (rn *runner) adopt(cond condition) {
	if rn.health.adopt(cond, StopCause{Error: "another replica stopped the route (the consumer is paused by route health)"}, time.Now()) != becameStopped {
		return
	}
	rn.m.SetHealth(cond.String(), conditionLabels())
	rn.m.HealthTransition(becameStopped.String(), cond.String())
	rn.log.Warn("route stopped: another replica found a route-wide condition; probing with single events", "condition", cond.String())
	rn.notify()
}

// agentTransition makes a transition of an agent's health visible (on a
// route that serves many). It never touches the consumer's pause: the
// route's other agents run on.
func (rn *runner) agentTransition(ag *agentHealth, tr transition, out Outcome) {
	if tr == noChange {
		return
	}
	now := time.Now()
	hs := ag.health.state(now)
	attrs := []any{"trigger_id", ag.id.String(), "class", string(out.Class)}
	if out.Status != 0 {
		attrs = append(attrs, "status", out.Status)
	}
	switch tr {
	case becameStopped:
		rn.m.AgentHealth(ag.id.String(), conditionNone.String(), hs.Condition.String())
		rn.log.Warn("agent stopped: a condition of its own; its events wait for its probes while the route's other agents run",
			append(attrs, "condition", hs.Condition.String(), "next_probe_in", hs.RetryIn)...)
	case probeFailed:
		rn.log.Debug("agent probe failed; the agent stays stopped", append(attrs, "condition", hs.Condition.String(), "next_probe_in", hs.RetryIn)...)
	case resumed:
		rn.m.AgentHealth(ag.id.String(), hs.Was.String(), conditionNone.String())
		rn.log.Info("agent probe succeeded: agent resumed", append(attrs, "condition", hs.Was.String(),
			"stopped_for", now.Sub(hs.WasSince).Round(time.Millisecond))...)
	}
	rn.notify()
}

// notify wakes whatever waits on route health: the gate, the pull loop.
func (rn *runner) notify() {
	rn.life.changed.notify()
	rn.eng.signal()
}

// operatorPause takes an operator's pause of the consumer as last read
// (zero: none). While it holds the route calls and probes nothing, and
// hands back what it holds.
func (rn *runner) operatorPause(until time.Time) {
	now := time.Now()
	was := rn.health.state(now).OperatorPause
	rn.health.operatorPause(until, now)
	switch {
	case !until.IsZero() && was.IsZero():
		rn.log.Warn("the route's consumer is paused by an operator: no calls and no probes until it is resumed; handing back what this replica holds",
			"until", until)
		rn.gate.releaseAll()
		rn.policy.release()
	case until.IsZero() && !was.IsZero():
		rn.log.Info("the operator's pause of the route's consumer is over")
	default:
		return
	}
	rn.notify()
}

// status is what this replica knows of the route.
func (rn *runner) status(maxKeys int) RouteStatus {
	now := time.Now()
	hs := rn.health.state(now)
	st := RouteStatus{Route: rn.route.Name, Health: hs.Condition.String(), Limit: min(rn.route.MaxInFlight, hs.Limit),
		InFlight: rn.eng.active(), Ordered: rn.policy.status(maxKeys)}
	if hs.Condition != conditionNone {
		cause := hs.Cause
		st.Cause, st.Since, st.NextProbe, st.ProbeKey = &cause, hs.Since, hs.NextProbe, rn.gate.probeKey()
	}
	st.PausedBy = rn.fleet.pausedBy()
	st.Agents, st.AgentsStopped = rn.agents.stopped(now, MaxAgentsListed)
	return st
}

// consumer is the route's consumer handle, nil until bound.
func (b *binding) consumer() jetstream.Consumer {
	if cp := b.cons.Load(); cp != nil {
		return *cp
	}
	return nil
}
