package consumer

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/agentrelay/agentrelay/agentapi"
)

// BreakerSettings configure a route's circuit breaker. The zero value of each
// field means its default.
type BreakerSettings struct {
	// ConsecutiveFailures of the transient kind (5xx, timeouts, network
	// errors) that open the breaker. Default 5.
	ConsecutiveFailures uint32
	// OpenTimeout is how long the breaker stays open before it lets
	// probes through. Default 30s.
	OpenTimeout time.Duration
	// HalfOpenProbes is how many calls a half-open breaker lets through;
	// that many successes in a row close it. Default 1.
	HalfOpenProbes uint32
	// Disabled turns the breaker off: every call goes through.
	Disabled bool
}

// Breaker defaults.
const (
	DefaultConsecutiveFailures = 5
	DefaultOpenTimeout         = 30 * time.Second
	DefaultHalfOpenProbes      = 1
)

// WithDefaults returns s with zero fields set to their defaults.
func (s BreakerSettings) WithDefaults() BreakerSettings {
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if s.OpenTimeout <= 0 {
		s.OpenTimeout = DefaultOpenTimeout
	}
	if s.HalfOpenProbes == 0 {
		s.HalfOpenProbes = DefaultHalfOpenProbes
	}
	return s
}

// BreakerState is a circuit breaker state.
type BreakerState = gobreaker.State

// Breaker states.
const (
	BreakerClosed   = gobreaker.StateClosed
	BreakerHalfOpen = gobreaker.StateHalfOpen
	BreakerOpen     = gobreaker.StateOpen
)

// breaker wraps a gobreaker.CircuitBreaker with what the pull loop needs and
// gobreaker does not expose: when an open breaker will let probes through,
// and a signal on every state change.
type breaker struct {
	cb        *gobreaker.CircuitBreaker[struct{}]
	settings  BreakerSettings
	openUntil atomic.Int64 // unix nanos; meaningful while open
	changed   chan struct{}
}

// newBreaker returns a breaker; onChange, if set, is called on every
// transition (under gobreaker's lock: it must not call back into the
// breaker).
func newBreaker(name string, s BreakerSettings, onChange func(from, to BreakerState)) *breaker {
	s = s.WithDefaults()
	b := &breaker{settings: s, changed: make(chan struct{}, 1)}
	if s.Disabled {
		return b
	}
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: s.HalfOpenProbes,
		Timeout:     s.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= s.ConsecutiveFailures },
		IsSuccessful: func(err error) bool {
			// Only transient server-side failures say the API is
			// unhealthy. A 4xx or 429 is the API answering.
			return !agentapi.ClassOfError(err).Transient()
		},
		IsExcluded: func(err error) bool {
			// Our own shutdown says nothing about the API.
			return agentapi.ClassOfError(err) == agentapi.ClassCanceled
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.openUntil.Store(time.Now().Add(s.OpenTimeout).UnixNano())
			}
			select {
			case b.changed <- struct{}{}:
			default:
			}
			if onChange != nil {
				onChange(from, to)
			}
		},
	})
	return b
}

// call runs fn through the breaker. It reports open=true, without running
// fn, when the breaker refuses the call.
func (b *breaker) call(fn func() error) (err error, open bool) {
	if b.cb == nil {
		return fn(), false
	}
	_, err = b.cb.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return err, true
	}
	return err, false
}

// state returns the current state, moving an open breaker whose timeout has
// passed to half-open.
func (b *breaker) state() BreakerState {
	if b.cb == nil {
		return BreakerClosed
	}
	return b.cb.State()
}

// remaining is how long an open breaker stays open from now (0 when it is
// not open or about to let probes through).
func (b *breaker) remaining(now time.Time) time.Duration {
	if b.cb == nil {
		return 0
	}
	return max(time.Duration(b.openUntil.Load()-now.UnixNano()), 0)
}

// probes is how many calls a half-open breaker lets through.
func (b *breaker) probes() int { return int(b.settings.HalfOpenProbes) }
