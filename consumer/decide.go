package consumer

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// Classes an attempt can end in besides the API's response classes
// (agentapi.Class*).
const (
	// ClassPoison: the message breaks the producer contract; it was not sent.
	ClassPoison agentapi.Class = "poison"
	// ClassGated: the route is stopped by a route-wide condition (see
	// route-health.md); the message was not sent.
	ClassGated agentapi.Class = "gated"
)

// Outcome is how one attempt at a message ended.
type Outcome struct {
	Class  agentapi.Class
	Reason deadletter.Reason // for ClassPoison: which rule the message broke
	Status int               // HTTP status, 0 when there was no answer
	// RetryAfter is the API's Retry-After; for a route-wide outcome, the
	// wait until the route's next probe.
	RetryAfter time.Duration
	// RouteWide says the failure is the route's, not the message's: a
	// route-wide condition (outage, 401, 409, rate limit) holds, or many
	// messages meet 429s. It never costs the message a dead letter.
	RouteWide bool
	Err       error // detail for logs and the dead letter's error header
}

// Attempts counts what a message has been through.
type Attempts struct {
	// Delivered is JetStream's delivery count, this delivery included. It
	// also counts redeliveries after a crash and hand-backs during an
	// outage, so it only backs stops a message that keeps coming back.
	Delivered int
	// Failed counts the message's own failures (retryable ones while the
	// route was healthy), this one included, as far as this replica has
	// seen them. Backoff and MaxAttempts go by it.
	Failed int
	// Timeouts counts those of them that timed out; MaxTimeouts goes by
	// it.
	Timeouts int
}

// Action is the decision for a message.
type Action struct {
	Verdict verdict.Verdict
	Delay   time.Duration     // for Retry
	Reason  deadletter.Reason // for DeadLetter
}

// Decide is the response-class table: from how an attempt ended, what the
// message has been through and the route's policy, it returns what to do
// with the message. jitter is a number in [0, 1) drawn by the caller, so
// that Decide stays a pure function. p is resolved (RetryPolicy.WithDefaults):
// a route's is, from when the relay is built. The README's table is this
// function; keep them in step.
func Decide(o Outcome, a Attempts, p RetryPolicy, jitter float64) Action {
	switch o.Class {
	case agentapi.ClassAccepted:
		return Action{Verdict: verdict.Ack}
	case ClassPoison:
		return Action{Verdict: verdict.DeadLetter, Reason: o.Reason}
	case agentapi.ClassBadRequest:
		return Action{Verdict: verdict.DeadLetter, Reason: deadletter.ReasonBadRequest}
	case agentapi.ClassForbidden:
		return Action{Verdict: verdict.DeadLetter, Reason: deadletter.ReasonForbidden}
	case agentapi.ClassNotFound:
		return Action{Verdict: verdict.DeadLetter, Reason: deadletter.ReasonNotFound}
	case agentapi.ClassClientError:
		return Action{Verdict: verdict.DeadLetter, Reason: deadletter.ReasonRejected}
	case agentapi.ClassCanceled:
		// We are shutting down: hand the message back at once so another
		// replica takes it.
		return Action{Verdict: verdict.Retry}
	}
	if o.RouteWide || o.Class == ClassGated {
		// Not the message's fault: wait for the route's next probe (or,
		// under a rate limit many messages meet, for the Retry-After),
		// spread a little so the backlog does not return as a herd; never
		// longer for having waited before, never a dead letter.
		wait := max(min(o.RetryAfter, p.MaxRetryAfter), 100*time.Millisecond)
		return Action{Verdict: verdict.Retry, Delay: wait + time.Duration(jitter*float64(wait)/4)}
	}
	// Everything else is a failure of the message's own, and may pass:
	// 5xx, 408, timeouts, network errors, 1xx/3xx from something in the
	// way, a 429 that other messages do not meet (a limit on one
	// conversation), and 401 or 409 when route health is off.
	if a.Failed >= p.MaxAttempts || a.Timeouts >= p.MaxTimeouts || a.Delivered >= DeliveryCapFactor*p.MaxAttempts {
		return Action{Verdict: verdict.DeadLetter, Reason: deadletter.ReasonMaxAttempts}
	}
	return Action{Verdict: verdict.Retry, Delay: Backoff(p, a.Failed, o.RetryAfter, jitter)}
}

// afterLetterRefused is what happens to a message whose dead letter could
// not be stored (the dead-letter stream is unavailable or full): it stays
// in the stream and the dead letter is tried again after a backoff. The
// verdict stands; only carrying it out is retried.
func afterLetterRefused(a Attempts, p RetryPolicy, jitter float64) Action {
	return Action{Verdict: verdict.Retry, Delay: Backoff(p, max(a.Failed, 1), 0, jitter)}
}

// inPlace reports whether a retry of an ordered event waits where it is
// (held, kept alive) rather than going back to the stream: every retry
// with a delay does, since a nak would let the next event of its key
// overtake it. A retry without a delay is a hand-back (a drain, a lost
// pin) and goes back at once.
func inPlace(act Action) bool { return act.Verdict == verdict.Retry && act.Delay > 0 }

// Backoff is the delay before the next attempt after a message's
// failures-th failure (1-based): exponential from InitialBackoff by Multiplier,
// capped at MaxBackoff, with "equal jitter" (between half and all of the
// step) so that a burst of failures does not come back as a burst. A
// Retry-After from the server raises the delay to what it asked for, capped
// at MaxRetryAfter; it never lowers it. p is resolved, as for Decide.
func Backoff(p RetryPolicy, failures int, retryAfter time.Duration, jitter float64) time.Duration {
	step := float64(p.InitialBackoff)
	for i := 1; i < failures && step < float64(p.MaxBackoff); i++ {
		step *= p.Multiplier
	}
	step = min(step, float64(p.MaxBackoff))
	jitter = min(max(jitter, 0), 1)
	d := time.Duration(step/2 + step/2*jitter)
	if retryAfter > 0 {
		d = max(d, min(retryAfter, p.MaxRetryAfter))
	}
	return d
}

// ownFailure reports whether an outcome is a failure of the message's own:
// retryable, and not explained by a route-wide condition (the caller marks
// such outcomes RouteWide). Only these count towards RetryPolicy's budget
// and grow its backoff.
func ownFailure(o Outcome) bool {
	switch o.Class {
	case agentapi.ClassAccepted, ClassPoison, agentapi.ClassBadRequest, agentapi.ClassForbidden,
		agentapi.ClassNotFound, agentapi.ClassClientError, agentapi.ClassCanceled, ClassGated:
		return false
	}
	return !o.RouteWide
}
