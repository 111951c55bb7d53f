package consumer

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// This file is route health's vocabulary: the conditions that stop a
// route, what a call may do while one holds (Admission), and what a
// recorded outcome changed (Transition).

// Condition is a route-wide reason to stop calling the API.
type Condition string

// Conditions. The empty Condition is a healthy route.
const (
	ConditionNone         Condition = ""
	ConditionOutage       Condition = "outage"       // 5xx, timeouts or network errors on a share of fresh messages
	ConditionUnauthorized Condition = "unauthorized" // 401, or a token the client cannot send: the token is refused
	ConditionNotRunnable  Condition = "not_runnable" // 409: the agent or channel is not runnable
	ConditionRateLimited  Condition = "rate_limited" // 429 on fresh messages in a row, even at a concurrency of one
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
func (c Condition) String() string {
	if c == ConditionNone {
		return conditionHealthyLabel
	}
	return string(c)
}

// explains reports whether an outcome of class is what condition c makes
// every call end in: while c holds, such an outcome is the route's, not the
// message's.
func (c Condition) explains(class agentapi.Class) bool {
	switch c {
	case ConditionOutage:
		return class.Transient()
	case ConditionUnauthorized:
		return class == agentapi.ClassUnauthorized
	case ConditionNotRunnable:
		return class == agentapi.ClassConflict
	case ConditionRateLimited:
		return class == agentapi.ClassRateLimited
	}
	return false
}

// anyMessageShows reports whether any message, fresh or not, proves c
// again when its call meets it: a refused token or an agent that is not
// runnable is the route's whoever calls. An outage or a rate limit is only
// shown again by a fresh message.
func (c Condition) anyMessageShows() bool {
	return c == ConditionUnauthorized || c == ConditionNotRunnable
}

func conditionLabels() []string {
	cs := Conditions()
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// Conditions lists every condition, healthy first, for metrics that export
// one series per state.
func Conditions() []Condition {
	return []Condition{ConditionNone, ConditionOutage, ConditionUnauthorized, ConditionNotRunnable, ConditionRateLimited}
}

// Admission is what the health model says about a call about to be made.
type Admission uint8

// Admissions.
const (
	Admit Admission = iota + 1 // healthy: call
	Probe                      // stopped, and this call is the probe: call, then report it as one
	Gated                      // stopped: do not call; the message waits for the next probe or goes back
)

// Transition is what a recorded outcome changed.
type Transition uint8

// Transitions.
const (
	NoChange    Transition = iota
	Tripped                // a route-wide condition began
	ProbeFailed            // a probe met the condition again; the interval grew
	Resumed                // a probe got through: the route is healthy
)

func (t Transition) String() string {
	switch t {
	case Tripped:
		return "tripped"
	case ProbeFailed:
		return "probe_failed"
	case Resumed:
		return "resumed"
	}
	return "none"
}
