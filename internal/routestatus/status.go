package routestatus

import "time"

// Status is what one replica knows of one of its routes: its health here,
// and when the route is stopped, why, since when and what it waits for.
// `agentrelay status` asks every replica (see internal/app's status
// service) and shows their answers side by side: route health is each
// replica's own, so replicas may disagree for a moment.
type Status struct {
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
	// last saw it: PausedByRouteHealth, PausedByOperator, or "" when it
	// runs.
	PausedBy string `json:"paused_by,omitempty"`
	// InFlight counts the messages this replica handles now; Limit is how
	// many it may (the AIMD limit under 429, else max_in_flight).
	InFlight int `json:"in_flight"`
	Limit    int `json:"limit"`
	// Ordered is set on an ordered route: what this replica holds of it.
	Ordered *Ordered `json:"ordered,omitempty"`
	// AgentsStopped counts, on a route that serves many agents, the agents
	// stopped here by a condition of their own; Agents lists them, longest
	// stopped first, at most MaxAgentsListed.
	AgentsStopped int     `json:"agents_stopped,omitempty"`
	Agents        []Agent `json:"agents,omitempty"`
}

// Agent is one agent of a route that serves many, stopped on this replica
// by a condition of its own: its events wait for its probes while the
// route's other agents run.
type Agent struct {
	TriggerID string     `json:"trigger_id"`
	Health    string     `json:"health"` // "outage", "unauthorized" or "not_runnable"
	Cause     *StopCause `json:"cause,omitempty"`
	Since     time.Time  `json:"since,omitzero"`
	NextProbe time.Time  `json:"next_probe,omitzero"`
	ProbeKey  string     `json:"probe_key,omitempty"`
}

// MaxAgentsListed bounds the stopped agents a Status lists.
const MaxAgentsListed = 20

// StopCause is the evidence behind a route-wide condition: the class of
// the last call that met it, its HTTP status (0 when there was no answer)
// and its error, one line, bounded.
type StopCause struct {
	Class  string `json:"class"`
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Paused-by values of Status.
const (
	PausedByRouteHealth = "route_health"
	PausedByOperator    = "operator"
)

// Ordered is what one replica holds of an ordered route: whether it owns
// the route, and the conversation keys whose next event waits here. Only
// the owner holds events, and only in its memory: this is how `agentrelay
// status` learns which keys are blocked.
type Ordered struct {
	Route string `json:"route"`
	// PinID is the pin this replica holds (the consumer's pinned client id
	// as the server last gave it): "" when it stands by.
	PinID string `json:"pin_id,omitempty"`
	// Fenced: this replica took the route over and waits until every
	// event the previous owner had is settled or redelivered here before
	// it starts any (every held key counts as blocked meanwhile).
	Fenced bool `json:"fenced"`
	// Holding counts the events held, Running those being handled
	// (called, or waiting out a retry in place).
	Holding int `json:"holding"`
	Running int `json:"running"`
	// BlockedKeys counts the keys whose next event waits; Blocked lists
	// the longest waiting of them, oldest first, at most as many as were
	// asked for (at most MaxBlockedKeys).
	BlockedKeys int          `json:"blocked_keys"`
	Blocked     []BlockedKey `json:"blocked"`
}

// BlockedKey is a conversation key whose next event waits.
type BlockedKey struct {
	Key string `json:"key"`
	// Waiting counts the key's events that wait.
	Waiting int `json:"waiting"`
	// OldestSeq is the stream sequence of its oldest waiting event, and
	// Since when that event arrived at this replica.
	OldestSeq uint64    `json:"oldest_seq"`
	Since     time.Time `json:"since"`
	// WaitingSeconds is how long that event has waited, by the clock of
	// the replica (the reader's clock may differ).
	WaitingSeconds float64 `json:"waiting_seconds"`
	// BehindSeq is the stream sequence of the key's event being handled,
	// which the others wait behind (0 when none is: the route is fenced),
	// and BehindFailures its failures on this replica so far (a retry in
	// place).
	BehindSeq      uint64 `json:"behind_seq,omitempty"`
	BehindFailures int    `json:"behind_failures,omitempty"`
}

// MaxBlockedKeys bounds the keys one Ordered lists.
const MaxBlockedKeys = 100

// DefaultDurable is the name of route's consumer when the configuration
// names none: agentrelay-<route>.
func DefaultDurable(route string) string { return "agentrelay-" + route }
