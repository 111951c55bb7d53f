package consumer

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// Classes an attempt can end in besides the API's response classes
// (agentapi.Class*).
const (
	// ClassPoison: the message breaks the producer contract; it was not sent.
	ClassPoison agentapi.Class = "poison"
	// ClassCircuitOpen: the route's circuit breaker refused the call; it was
	// not sent.
	ClassCircuitOpen agentapi.Class = "circuit_open"
)

// Reason is the machine-readable reason a message was dead-lettered. It is
// carried in the dead letter's Agentrelay-Reason header and as a metric
// label, so the set is small and fixed.
type Reason string

// Dead-letter reasons.
const (
	// Poison messages, dead-lettered without calling the API.
	ReasonInvalidJSON            Reason = "invalid_json"             // body is not the API's JSON object
	ReasonMissingInput           Reason = "missing_input"            // input absent or empty
	ReasonInputTooLarge          Reason = "input_too_large"          // input (or body) over the route's limit
	ReasonInvalidUTF8            Reason = "invalid_utf8"             // body or text fields not valid UTF-8
	ReasonInvalidIdempotencyKey  Reason = "invalid_idempotency_key"  // message id unusable as a header value
	ReasonInvalidConversationKey Reason = "invalid_conversation_key" // conversation key too long or with control characters

	// Permanent answers of the API.
	ReasonBadRequest Reason = "bad_request" // 400
	ReasonForbidden  Reason = "forbidden"   // 403
	ReasonNotFound   Reason = "not_found"   // 404
	ReasonRejected   Reason = "rejected"    // any other 4xx that retrying cannot fix (405, 413, 422, ...)

	// ReasonMaxAttempts: a retryable failure on the last allowed attempt.
	ReasonMaxAttempts Reason = "max_attempts"
)

// Verdict is what happens to a message.
type Verdict uint8

// Verdicts.
const (
	VerdictAck        Verdict = iota + 1 // the API accepted it: remove it from the stream
	VerdictRetry                         // nak with Action.Delay: redeliver later with the same key
	VerdictDeadLetter                    // copy to the dead-letter stream, then terminate
)

func (v Verdict) String() string {
	switch v {
	case VerdictAck:
		return "ack"
	case VerdictRetry:
		return "retry"
	case VerdictDeadLetter:
		return "dead_letter"
	}
	return "unknown"
}

// Outcome is how one attempt at a message ended.
type Outcome struct {
	Class      agentapi.Class
	Reason     Reason        // for ClassPoison: which rule the message broke
	Status     int           // HTTP status, 0 when there was no answer
	RetryAfter time.Duration // the API's Retry-After, or the breaker's remaining open time for ClassCircuitOpen
	Err        error         // detail for logs and the dead letter's error header
}

// Action is the decision for a message.
type Action struct {
	Verdict Verdict
	Delay   time.Duration // for Retry
	Reason  Reason        // for DeadLetter
}

// RetryPolicy bounds retries of a route. The zero value of each field means
// its default, so RetryPolicy{} is a sensible policy.
type RetryPolicy struct {
	// MaxAttempts is the number of deliveries after which a retryable
	// failure is dead-lettered with ReasonMaxAttempts. Default 10.
	MaxAttempts int
	// InitialBackoff is the delay before the second attempt. Default 1s.
	InitialBackoff time.Duration
	// MaxBackoff caps the exponential backoff. Default 5m.
	MaxBackoff time.Duration
	// Multiplier grows the backoff per attempt. Default 2.
	Multiplier float64
	// MaxRetryAfter caps how long a Retry-After header can delay a retry:
	// the header is the server's word, not ours to trust without bound.
	// Default 15m.
	MaxRetryAfter time.Duration
}

// Policy defaults.
const (
	DefaultMaxAttempts    = 10
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 5 * time.Minute
	DefaultMultiplier     = 2.0
	DefaultMaxRetryAfter  = 15 * time.Minute
)

// WithDefaults returns p with zero fields set to their defaults.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	if p.Multiplier < 1 {
		p.Multiplier = DefaultMultiplier
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = DefaultMaxRetryAfter
	}
	return p
}

// Decide is the response-class table: from how an attempt ended, which
// delivery attempt it was (1 for the first) and the route's policy, it
// returns what to do with the message. jitter is a number in [0, 1) drawn by
// the caller, so that Decide stays a pure function. The README's table is
// this function; keep them in step.
func Decide(o Outcome, attempt int, p RetryPolicy, jitter float64) Action {
	p = p.WithDefaults()
	switch o.Class {
	case agentapi.ClassAccepted:
		return Action{Verdict: VerdictAck}
	case ClassPoison:
		return Action{Verdict: VerdictDeadLetter, Reason: o.Reason}
	case agentapi.ClassBadRequest:
		return Action{Verdict: VerdictDeadLetter, Reason: ReasonBadRequest}
	case agentapi.ClassForbidden:
		return Action{Verdict: VerdictDeadLetter, Reason: ReasonForbidden}
	case agentapi.ClassNotFound:
		return Action{Verdict: VerdictDeadLetter, Reason: ReasonNotFound}
	case agentapi.ClassClientError:
		return Action{Verdict: VerdictDeadLetter, Reason: ReasonRejected}
	case ClassCircuitOpen:
		// Not the message's fault and nothing was sent: wait out the
		// breaker (spread a little so probes do not arrive in a herd) and
		// never dead-letter for it, even on the last attempt.
		wait := max(o.RetryAfter, p.InitialBackoff)
		return Action{Verdict: VerdictRetry, Delay: wait + time.Duration(jitter*float64(wait)/4)}
	case agentapi.ClassCanceled:
		// We are shutting down: hand the message back at once so another
		// replica takes it.
		return Action{Verdict: VerdictRetry}
	}
	// Everything else may succeed later: 401 (a token being rotated), 409
	// (agent not runnable yet), 429, 5xx, 408, timeouts, network errors,
	// and 1xx/3xx from something in the way.
	if attempt >= p.MaxAttempts {
		return Action{Verdict: VerdictDeadLetter, Reason: ReasonMaxAttempts}
	}
	return Action{Verdict: VerdictRetry, Delay: Backoff(p, attempt, o.RetryAfter, jitter)}
}

// Backoff is the delay before the next attempt after a retryable failure of
// attempt number attempt (1-based): exponential from InitialBackoff by
// Multiplier, capped at MaxBackoff, with "equal jitter" (between half and all
// of the step) so that a burst of failures does not come back as a burst.
// A Retry-After from the server raises the delay to what it asked for, capped
// at MaxRetryAfter; it never lowers it.
func Backoff(p RetryPolicy, attempt int, retryAfter time.Duration, jitter float64) time.Duration {
	p = p.WithDefaults()
	step := float64(p.InitialBackoff)
	for i := 1; i < attempt && step < float64(p.MaxBackoff); i++ {
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
