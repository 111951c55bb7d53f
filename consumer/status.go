package consumer

import "github.com/agentrelay/agentrelay/internal/routestatus"

// RouteStatus is what one replica knows of one of its routes
// (routestatus.Status: the vocabulary `agentrelay status` reads too).
type RouteStatus = routestatus.Status

// StopCause is the evidence behind a route-wide condition.
type StopCause = routestatus.StopCause

// AgentStatus is one agent of a route that serves many, stopped on this
// replica by a condition of its own.
type AgentStatus = routestatus.Agent

// MaxAgentsListed bounds the stopped agents a RouteStatus lists.
const MaxAgentsListed = routestatus.MaxAgentsListed

// Paused-by values of RouteStatus.
const (
	PausedByRouteHealth = routestatus.PausedByRouteHealth
	PausedByOperator    = routestatus.PausedByOperator
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
