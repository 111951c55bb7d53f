package telemetry

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxTriggerIDLabels bounds the trigger_id label values of one route's
// per-agent metrics: the first ids a route calls get their own series,
// every later one shares OverflowTriggerID. A route serving thousands of
// agents then costs a bounded number of series, and the agents an alert
// names are, in practice, the ones that have been there from the start.
const MaxTriggerIDLabels = 100

// OverflowTriggerID is the trigger_id of the agents past MaxTriggerIDLabels.
const OverflowTriggerID = "_other"

// agentMetrics are the per-agent metrics of routes that serve many agents.
type agentMetrics struct {
	requests *prometheus.CounterVec
	stopped  *prometheus.GaugeVec // one series per stopped agent (and the overflow)
	byState  *prometheus.GaugeVec // stopped agents per condition, whatever their id
}

func newAgentMetrics() agentMetrics {
	return agentMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "agent_trigger_requests_total",
			Help: "On a route that serves many agents: trigger calls per agent, by HTTP status code, or by error when there was no answer. trigger_id is " + OverflowTriggerID + " past the first 100 agents of a route.",
		}, []string{"route", "trigger_id", "code", "error"}),
		stopped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "agent_stopped",
			Help: "On a route that serves many agents: 1 while an agent is stopped on this replica by a condition of its own (its events wait for its probes; the route runs on). Under trigger_id " + OverflowTriggerID + ", how many agents past the first 100 are stopped.",
		}, []string{"route", "trigger_id", "condition"}),
		byState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "route_agents_stopped",
			Help: "On a route that serves many agents: how many agents are stopped on this replica, by condition.",
		}, []string{"route", "condition"}),
	}
}

func (a agentMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{a.requests, a.stopped, a.byState}
}

// triggerIDLabels hands out a route's trigger_id label values: an id's
// own up to MaxTriggerIDLabels distinct ids, OverflowTriggerID after.
type triggerIDLabels struct {
	mu  sync.Mutex // guards ids
	ids map[string]struct{}
}

func (l *triggerIDLabels) label(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.ids[id]; ok {
		return id
	}
	if len(l.ids) >= MaxTriggerIDLabels {
		return OverflowTriggerID
	}
	if l.ids == nil {
		l.ids = map[string]struct{}{}
	}
	l.ids[id] = struct{}{}
	return id
}

// AgentTrigger counts one call of an agent of a route that serves many.
func (r *RouteMetrics) AgentTrigger(triggerID string, status int, noAnswer string) {
	code, errKind := "", noAnswer
	if status != 0 {
		code, errKind = statusText(status), ""
	}
	r.m.agents.requests.WithLabelValues(r.name, r.ids.label(triggerID), code, errKind).Inc()
}

// AgentHealth records an agent's move from one health state to another.
func (r *RouteMetrics) AgentHealth(triggerID, from, to string) {
	id := r.ids.label(triggerID)
	if from != healthyState {
		r.m.agents.byState.WithLabelValues(r.name, from).Dec()
		if id == OverflowTriggerID {
			r.m.agents.stopped.WithLabelValues(r.name, id, from).Dec()
		} else {
			r.m.agents.stopped.DeleteLabelValues(r.name, id, from)
		}
	}
	if to != healthyState {
		r.m.agents.byState.WithLabelValues(r.name, to).Inc()
		if id == OverflowTriggerID {
			r.m.agents.stopped.WithLabelValues(r.name, id, to).Inc()
		} else {
			r.m.agents.stopped.WithLabelValues(r.name, id, to).Set(1)
		}
	}
}

// healthyState is the route health state of no condition.
const healthyState = "healthy"
