package consumer

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// This file is route health's vocabulary: the conditions that stop a
// route, what a call may do while one holds (admission), and what a
// recorded outcome changed (transition).

// condition is a route-wide reason to stop calling the API.
type condition string

// Conditions. The empty condition is a healthy route.
const (
	conditionNone         condition = ""
	conditionOutage       condition = "outage"       // 5xx, timeouts or network errors on a share of fresh messages
	conditionUnauthorized condition = "unauthorized" // 401, or a token the client cannot send: the token is refused
	conditionNotRunnable  condition = "not_runnable" // 409: the agent or channel is not runnable
	conditionRateLimited  condition = "rate_limited" // 429 on fresh messages in a row, even at a concurrency of one
)

const (
	conditionHealthyLabel = "healthy" // how ConditionNone is shown in logs and metrics
	rateLimitGateStreak   = 5         // fresh 429s in a row at concurrency one that stop the route
	minCutSpacing         = 100 * time.Millisecond
	// rateLimitShare of the fresh calls in the window answered 429 makes
	// a 429 the route's (AIMD cuts its concurrency, and the 429 costs the
	// message nothing); below it, a 429 is the message's own (a limit on
	// one conversation, say) and counts towards its budget.
	rateLimitShare = 0.1
)

// String names the condition for logs and metrics.
func (c condition) String() string {
	if c == conditionNone {
		return conditionHealthyLabel
	}
	return string(c)
}

// explains reports whether an outcome of class is what condition c makes
// every call end in: while c holds, such an outcome is the route's, not the
// message's.
func (c condition) explains(class agentapi.Class) bool {
	switch c {
	case conditionOutage:
		return class.Transient()
	case conditionUnauthorized:
		return class == agentapi.ClassUnauthorized
	case conditionNotRunnable:
		return class == agentapi.ClassConflict
	case conditionRateLimited:
		return class == agentapi.ClassRateLimited
	}
	return false
}

// anyMessageShows reports whether any message, fresh or not, proves c
// again when its call meets it: a refused token or an agent that is not
// runnable is the route's whoever calls. An outage or a rate limit is only
// shown again by a fresh message.
func (c condition) anyMessageShows() bool {
	return c == conditionUnauthorized || c == conditionNotRunnable
}

// sharedByReplicas reports whether c holds for every replica alike, so that
// another replica's accepted events show it is over. A refused token may
// be this replica's alone (a rotation reaches pods one by one).
func (c condition) sharedByReplicas() bool {
	return c != conditionNone && c != conditionUnauthorized
}

func conditionLabels() []string {
	cs := conditions()
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// conditions lists every condition, healthy first, for metrics that export
// one series per state.
func conditions() []condition {
	return []condition{conditionNone, conditionOutage, conditionUnauthorized, conditionNotRunnable, conditionRateLimited}
}

// admission is what the health model says about a call about to be made.
type admission uint8

// Admissions.
const (
	admitCall  admission = iota + 1 // healthy: call
	admitProbe                      // stopped, and this call is the probe: call, then report it as one
	admitGated                      // stopped: do not call; the message waits for the next probe or goes back
)

// transition is what a recorded outcome changed.
type transition uint8

// Transitions.
const (
	noChange      transition = iota
	becameStopped            // a route-wide condition began
	probeFailed              // a probe met the condition again; the interval grew
	resumed                  // a probe got through: the route is healthy
)

func (t transition) String() string {
	switch t {
	case becameStopped:
		return "tripped"
	case probeFailed:
		return "probe_failed"
	case resumed:
		return "resumed"
	}
	return "none"
}
