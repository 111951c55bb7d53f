package consumer

import "time"

// RouteStatus is what one replica knows of one of its routes: its health
// here, and when the route is stopped, why, since when and what it waits
// for. `agentrelay status` asks every replica (see internal/app's status
// service) and shows their answers side by side: route health is each
// replica's own, so replicas may disagree for a moment.
type RouteStatus struct {
	Route string `json:"route"`
	// Health is "healthy", or the condition that stops the route on this
	// replica: "outage", "unauthorized", "not_runnable", "rate_limited".
	Health string `json:"health"`
	// Cause is what the condition was detected by (nil when healthy).
	Cause *StopCause `json:"cause,omitempty"`
	// Since is when the condition began; NextProbe when the next probe may
	// go (zero when healthy).
	Since     time.Time `json:"since,omitzero"`
	NextProbe time.Time `json:"next_probe,omitzero"`
	// ProbeKey is the Idempotency-Key of the message held to probe with,
	// if one is held.
	ProbeKey string `json:"probe_key,omitempty"`
	// PausedBy says who holds the route's consumer paused, as this replica
	// last saw it: "route_health", "operator", or "" when it runs.
	PausedBy string `json:"paused_by,omitempty"`
	// InFlight counts the messages this replica handles now; Limit is how
	// many it may (the AIMD limit under 429, else max_in_flight).
	InFlight int `json:"in_flight"`
	Limit    int `json:"limit"`
	// Ordered is set on an ordered route: what this replica holds of it.
	Ordered *OrderedStatus `json:"ordered,omitempty"`
	// AgentsStopped counts, on a route that serves many agents, the agents
	// stopped here by a condition of their own; Agents lists them, longest
	// stopped first, at most MaxAgentsListed.
	AgentsStopped int           `json:"agents_stopped,omitempty"`
	Agents        []AgentStatus `json:"agents,omitempty"`
}

// AgentStatus is one agent of a route that serves many, stopped on this
// replica by a condition of its own: its events wait for its probes while
// the route's other agents run.
type AgentStatus struct {
	TriggerID string     `json:"trigger_id"`
	Health    string     `json:"health"` // "outage", "unauthorized" or "not_runnable"
	Cause     *StopCause `json:"cause,omitempty"`
	Since     time.Time  `json:"since,omitzero"`
	NextProbe time.Time  `json:"next_probe,omitzero"`
	ProbeKey  string     `json:"probe_key,omitempty"`
}

// MaxAgentsListed bounds the stopped agents a RouteStatus lists.
const MaxAgentsListed = 20

// StopCause is the evidence behind a route-wide condition: the class of
// the last call that met it, its HTTP status (0 when there was no answer)
// and its error, one line, bounded.
type StopCause struct {
	Class  string `json:"class"`
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Paused-by values of RouteStatus.
const (
	PausedByRouteHealth = "route_health"
	PausedByOperator    = "operator"
)

// RouteStatus returns what this replica knows of the route named route,
// listing up to maxKeys blocked keys of an ordered route. It reports false
// for a route it does not run.
func (r *Relay) RouteStatus(route string, maxKeys int) (RouteStatus, bool) {
	for _, rn := range r.runners {
		if rn.route.Name == route {
			return rn.status(min(max(maxKeys, 0), MaxOrderedStatusKeys)), true
		}
	}
	return RouteStatus{}, false
}
