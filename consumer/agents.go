package consumer

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// This file is route health per agent, for a route that serves many agents
// (Route.Agents). Each agent has a health model and a gate of its own, so
// that a refused token, an agent that is not runnable or an agent that
// hangs stops that agent's events only: its conditions never pause the
// route's consumer, and the other agents' events keep flowing. What
// belongs to the route stays with the route's health: 429s (the AIMD
// limit), an outage of the API (the failures of agents that are not
// stopped themselves), an operator's pause. When several agents meet the
// same condition while nothing gets through, the condition is the route's
// after all (a revoked shared token, a channel that is not runnable, an
// API that is down): the route stops, on every replica.

// healthScope is the health model and the gate of what a condition stops:
// a route, or one agent of a route that serves many.
type healthScope struct {
	health *health
	gate   *gate
}

// agentHealth is one agent's health on a route that serves many.
type agentHealth struct {
	healthScope
	id   agentapi.TriggerID
	used time.Time // when a call last asked for it; guarded by agentHealths.mu
}

// agentMinCalls is how much evidence trips an agent's outage detector:
// three fresh failures in a row, or a failure ratio over at least three
// calls. An agent's events are a share of a route's, so the route's
// MinCalls would let one agent's failures count towards an outage of the
// route (and burn its events' attempts) long before its own tripped.
const agentMinCalls = 3

// escalateAgents is how many agents stopped by the same condition, with
// nothing accepted on the route since the first of them stopped, make the
// condition the route's.
const escalateAgents = 3

// maxAgentHealths bounds the agents whose health a route keeps; past it,
// healthy agents not called for idleAgent are forgotten (and start afresh
// when called again). Stopped agents are always kept.
const (
	maxAgentHealths = 10_000
	idleAgent       = time.Minute
)

// agentHealths is the health of every agent a route that serves many has
// called. It is safe for concurrent use.
type agentHealths struct {
	settings BreakerSettings // the route's, with agentMinCalls
	heldCap  int             // what the agents' gates hold together
	held     atomic.Int64    // messages held at the agents' gates now

	lastAccepted atomic.Int64 // unix nanos of the route's last accepted call

	mu   sync.Mutex // guards byID and every agentHealth's used
	byID map[agentapi.TriggerID]*agentHealth
}

// newAgentHealths returns the agents' health of rt. Each agent's gate holds
// one message at hand to probe with, and all of them together a quarter of
// the route's slots: the healthy agents keep the rest. The others go back
// to the stream until the agent's next probe (on an ordered route they
// wait in place, holding their key but no slot).
func newAgentHealths(rt Route) *agentHealths {
	s := rt.Breaker.WithDefaults()
	s.MinCalls = min(s.MinCalls, agentMinCalls)
	return &agentHealths{settings: s, heldCap: max(1, rt.MaxInFlight/4), byID: map[agentapi.TriggerID]*agentHealth{}}
}

// of returns the health of the agent id, creating it on first use; nil
// when the route calls one agent (a nil *agentHealths).
func (a *agentHealths) of(id agentapi.TriggerID, now time.Time) *agentHealth {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ag := a.byID[id]
	if ag == nil {
		if len(a.byID) >= maxAgentHealths {
			a.forgetIdleLocked(now)
		}
		// The AIMD limit inside is unused: 429s are the route's.
		ag = &agentHealth{id: id, healthScope: healthScope{health: newHealth(a.settings, 1), gate: newGate(1)}}
		a.byID[id] = ag
	}
	ag.used = now
	return ag
}

// forgetIdleLocked drops healthy agents not called for idleAgent.
func (a *agentHealths) forgetIdleLocked(now time.Time) {
	for id, ag := range a.byID {
		if now.Sub(ag.used) > idleAgent && ag.health.state(now).Condition == conditionNone {
			delete(a.byID, id)
		}
	}
}

// join adds w to ag's gate within the bound the agents share, and reports
// whether it is held.
func (a *agentHealths) join(ag *agentHealth, w *waiter) bool {
	if a.held.Add(1) > int64(a.heldCap) || !ag.gate.join(w) {
		a.held.Add(-1)
		return false
	}
	return true
}

// quit removes w from ag's gate.
func (a *agentHealths) quit(ag *agentHealth, w *waiter) {
	ag.gate.quit(w)
	a.held.Add(-1)
}

// accepted notes that a call of the route was accepted at now.
func (a *agentHealths) accepted(now time.Time) { a.lastAccepted.Store(now.UnixNano()) }

// escalates reports whether cond, which an agent has just met, is the
// route's: escalateAgents agents are stopped by it and nothing was
// accepted on the route since the first of them stopped.
func (a *agentHealths) escalates(cond condition, now time.Time) bool {
	last := time.Unix(0, a.lastAccepted.Load())
	n := 0
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ag := range a.byID {
		if hs := ag.health.state(now); hs.Condition == cond && hs.Since.After(last) {
			n++
		}
	}
	return n >= escalateAgents
}

// stopped lists the agents stopped now, longest stopped first, at most max
// of them, and how many there are.
func (a *agentHealths) stopped(now time.Time, maxListed int) ([]AgentStatus, int) {
	if a == nil {
		return nil, 0
	}
	a.mu.Lock()
	var out []AgentStatus
	for _, ag := range a.byID {
		if hs := ag.health.state(now); hs.Condition != conditionNone {
			cause := hs.Cause
			out = append(out, AgentStatus{TriggerID: ag.id.String(), Health: hs.Condition.String(), Cause: &cause,
				Since: hs.Since, NextProbe: hs.NextProbe, ProbeKey: ag.gate.probeKey()})
		}
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].TriggerID < out[j].TriggerID
	})
	n := len(out)
	return out[:min(n, maxListed)], n
}
