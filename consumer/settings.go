package consumer

import "time"

// This file holds a route's retry policy and route-health settings, with
// every default in one place. The zero value of each field means its
// default, so RetryPolicy{} and BreakerSettings{} are sensible.

// RetryPolicy bounds the retries of a route's messages.
type RetryPolicy struct {
	// MaxAttempts is the number of failures of a message's own (a 5xx,
	// timeout, network error or a 429 that other messages do not meet,
	// while its route is healthy) after which it is dead-lettered with
	// deadletter.ReasonMaxAttempts. Default 10. Whatever the cause, a
	// message delivered DeliveryCapFactor × MaxAttempts times is
	// dead-lettered on its next failure of its own.
	MaxAttempts int
	// MaxTimeouts is how many of those failures may be timeouts: a call
	// that hangs holds a call slot for the whole client timeout, so a
	// message whose calls keep hanging while others' do not is
	// dead-lettered sooner. While a share of the route's calls time out
	// (a slow API rather than a bad message), a timeout counts towards
	// MaxAttempts only. Default 3; never more than MaxAttempts.
	MaxTimeouts int
	// InitialBackoff is the delay before the second attempt. Default 1s.
	InitialBackoff time.Duration
	// MaxBackoff caps the exponential backoff. Default 4s: a failure of
	// one message is retried soon, because route-wide trouble (outages,
	// rate limits) is handled by route health, not by growing delays.
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
	DefaultMaxTimeouts    = 3
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 4 * time.Second
	DefaultMultiplier     = 2.0
	DefaultMaxRetryAfter  = 15 * time.Minute

	// DeliveryCapFactor × MaxAttempts deliveries, whatever their cause,
	// end a message on its next failure of its own: the local failure
	// count restarts on every replica, this does not.
	DeliveryCapFactor = 5
)

// WithDefaults returns p with zero fields set to their defaults. It adjusts
// nothing else: Check refuses a MaxBackoff below the InitialBackoff, given
// or defaulted.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.MaxTimeouts <= 0 {
		p.MaxTimeouts = DefaultMaxTimeouts
	}
	p.MaxTimeouts = min(p.MaxTimeouts, p.MaxAttempts)
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.Multiplier < 1 {
		p.Multiplier = DefaultMultiplier
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = DefaultMaxRetryAfter
	}
	return p
}

// BreakerSettings configure how a route detects an API outage and how it
// probes while a route-wide condition holds. The zero value of each field
// means its default, so BreakerSettings{} is sensible.
type BreakerSettings struct {
	// FailureRatio is the share of transient failures (5xx, timeouts,
	// network errors) among the route's recent calls that declares an
	// outage. Only fresh messages' failures count (a message's retries
	// never do); every success does. Default 0.5.
	FailureRatio float64
	// MinCalls is how many calls the recent window must hold before the
	// ratio counts, so that two failures out of three calls do not stop a
	// route. MinCalls failures of fresh messages in a row also declare an
	// outage, whatever came before them in the window: on a quiet route
	// the ratio of a window full of earlier successes would take too long
	// to tip. Default 10.
	MinCalls uint32
	// Window is how far back "recent" reaches (a rolling window of ten
	// buckets). Default 5s.
	Window time.Duration
	// ProbeInterval is the wait before the first probe after a route-wide
	// condition is detected. Default 1s.
	ProbeInterval time.Duration
	// MaxProbeInterval caps the probe interval, which doubles after every
	// failed probe. It bounds how long a route stays stopped after the API
	// has recovered. Default 3s.
	MaxProbeInterval time.Duration
	// Disabled turns route health off: no condition is ever detected, every
	// failure is handled per message, and concurrency stays fixed.
	Disabled bool
}

// Breaker defaults. They are chosen for recovery: a route stops within
// about a second of an outage (ten calls, half failing), probes after one
// second, and never waits more than three between probes, so the backlog
// starts to drain within seconds of the API's recovery.
const (
	DefaultFailureRatio     = 0.5
	DefaultMinCalls         = 10
	DefaultBreakerWindow    = 5 * time.Second
	DefaultProbeInterval    = time.Second
	DefaultMaxProbeInterval = 3 * time.Second
)

// WithDefaults returns s with zero fields set to their defaults. Check
// refuses a MaxProbeInterval below the ProbeInterval, given or defaulted.
func (s BreakerSettings) WithDefaults() BreakerSettings {
	if s.FailureRatio <= 0 || s.FailureRatio > 1 {
		s.FailureRatio = DefaultFailureRatio
	}
	if s.MinCalls == 0 {
		s.MinCalls = DefaultMinCalls
	}
	if s.Window <= 0 {
		s.Window = DefaultBreakerWindow
	}
	if s.ProbeInterval <= 0 {
		s.ProbeInterval = DefaultProbeInterval
	}
	if s.MaxProbeInterval <= 0 {
		s.MaxProbeInterval = DefaultMaxProbeInterval
	}
	return s
}
