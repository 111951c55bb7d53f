package consumer

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
)

// Problem is one thing wrong with the routes or options given to New, as
// Check finds it. Field names the field by its Go path ("MaxAckPending",
// "Retry.MaxBackoff", "DeadLetter.MaxAge", "PullExpiry"), so that a caller
// that filled the field from elsewhere (a configuration file) can say where
// the value came from.
type Problem struct {
	// Route is the index of the route in the list given to Check, or -1 for
	// a problem with Options.
	Route   int
	Field   string
	Message string
}

func (p Problem) Error() string { return p.Field + ": " + p.Message }

// ErrInvalidRoute is wrapped by every route validation error.
var ErrInvalidRoute = errors.New("invalid route")

// ErrInvalidOptions is wrapped by every Options validation error.
var ErrInvalidOptions = errors.New("invalid relay options")

// MinAckWait is the shortest AckWait: keep-alives every third of it must
// be able to keep a call alive.
const MinAckWait = time.Second

// Check returns every problem New would refuse routes and o for, and nil
// when there is none. It is the one place that decides what the relay
// accepts: a zero field means its default, a negative one is refused, and
// relations between fields (MaxAckPending at least MaxInFlight,
// Retry.MaxBackoff at least Retry.InitialBackoff, PullExpiry long enough
// for PullHeartbeat, ...) are checked on the values the defaults give,
// never silently adjusted. It does not check Route.Agent: a caller that
// only checks a configuration has none.
func Check(routes []Route, o Options) []Problem {
	var ps []Problem
	add := func(route int, field, format string, args ...any) {
		ps = append(ps, Problem{Route: route, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	checkOptions(o, func(field, format string, args ...any) { add(-1, field, format, args...) })
	names := map[string]int{}
	durables := map[string]int{}
	for i, r := range routes {
		checkRoute(r, func(field, format string, args ...any) { add(i, field, format, args...) })
		if r.Name != "" {
			if j, dup := names[r.Name]; dup {
				add(i, "Name", "%q is also the name of route %d", r.Name, j)
			}
			names[r.Name] = i
		}
		d := r.WithDefaults()
		key := d.Stream + "/" + d.Durable
		if j, dup := durables[key]; dup {
			add(i, "Durable", "%q on stream %q is also the durable of route %d (%s)", d.Durable, d.Stream, j, routes[j].Name)
		}
		durables[key] = i
	}
	return ps
}

type addFunc func(field, format string, args ...any)

func checkOptions(o Options, add addFunc) {
	notNegative(add, "DrainGrace", o.DrainGrace)
	notNegative(add, "PullExpiry", o.PullExpiry)
	notNegative(add, "PullHeartbeat", o.PullHeartbeat)
	notNegative(add, "LagInterval", o.LagInterval)
	if math.IsNaN(o.LogAccepted) || o.LogAccepted < 0 || o.LogAccepted > 1 {
		add("LogAccepted", "%v is not a share between 0 and 1", o.LogAccepted)
	}
	checkDeadLetter(o.DeadLetter, func(field, format string, args ...any) { add("DeadLetter."+field, format, args...) })
	o = o.timingDefaults()
	if o.Consumers != ManageConsumers && o.Consumers != ObserveConsumers {
		add("Consumers", "%q is not %q or %q", o.Consumers, ManageConsumers, ObserveConsumers)
	}
	if o.PullExpiry < 2*o.PullHeartbeat+time.Second {
		add("PullExpiry", "%v is under twice the pull heartbeat %v plus 1s: a pull would be given up before its heartbeats could be missed", o.PullExpiry, o.PullHeartbeat)
	}
}

func checkDeadLetter(c deadletter.Config, add addFunc) {
	notNegative(add, "MaxAge", c.MaxAge)
	notNegative(add, "DuplicateWindow", c.DuplicateWindow)
	notNegative(add, "PublishTimeout", c.PublishTimeout)
	notNegative(add, "Replicas", c.Replicas)
	maxAge := or(c.MaxAge, deadletter.DefaultMaxAge)
	if w := or(c.DuplicateWindow, deadletter.DefaultDuplicateWindow); w > maxAge {
		add("DuplicateWindow", "%v is longer than the maximum age %v", w, maxAge)
	}
}

func checkRoute(r Route, add addFunc) {
	if r.Name == "" {
		add("Name", "is empty")
	}
	if r.Stream == "" {
		add("Stream", "is empty")
	}
	notNegative(add, "MaxInFlight", r.MaxInFlight)
	notNegative(add, "MaxAckPending", r.MaxAckPending)
	notNegative(add, "AckWait", r.AckWait)
	notNegative(add, "Contract.MaxInputBytes", r.Contract.MaxInputBytes)
	d := r.WithDefaults()
	if d.Deliver != DeliverAll && d.Deliver != DeliverNew {
		add("Deliver", "%q is not %q or %q", d.Deliver, DeliverAll, DeliverNew)
	}
	if f := d.Contract.Format; f != event.BodyJSON && f != event.BodyText && f != event.BodyCloudEvents {
		add("Contract.Format", "%q is not %q, %q or %q", f, event.BodyJSON, event.BodyText, event.BodyCloudEvents)
	}
	if d.Ordering != OrderNone && d.Ordering != OrderByConversationKey {
		add("Ordering", "%q is not %q or %q", d.Ordering, OrderNone, OrderByConversationKey)
	}
	if r.MaxAckPending > 0 && r.MaxAckPending < d.MaxInFlight {
		add("MaxAckPending", "%d is below the maximum in flight %d: JetStream would never let that many be in flight", r.MaxAckPending, d.MaxInFlight)
	}
	if d.AckWait < MinAckWait {
		add("AckWait", "%v is under %v: keep-alives every third of it could not keep a call alive", d.AckWait, MinAckWait)
	}
	if r.MaxRate < 0 || math.IsNaN(r.MaxRate) || math.IsInf(r.MaxRate, 0) {
		add("MaxRate", "must be a number of calls per second, 0 for no cap")
	}
	checkRetry(r.Retry, func(field, format string, args ...any) { add("Retry."+field, format, args...) })
	checkBreaker(r.Breaker, func(field, format string, args ...any) { add("Breaker."+field, format, args...) })
}

func checkRetry(p RetryPolicy, add addFunc) {
	notNegative(add, "MaxAttempts", p.MaxAttempts)
	notNegative(add, "MaxTimeouts", p.MaxTimeouts)
	notNegative(add, "InitialBackoff", p.InitialBackoff)
	notNegative(add, "MaxBackoff", p.MaxBackoff)
	notNegative(add, "MaxRetryAfter", p.MaxRetryAfter)
	if d := p.WithDefaults(); d.MaxBackoff < d.InitialBackoff {
		add("MaxBackoff", "%v is below the initial backoff %v", d.MaxBackoff, d.InitialBackoff)
	}
	if p.Multiplier != 0 && !(p.Multiplier >= 1) || math.IsInf(p.Multiplier, 0) {
		add("Multiplier", "must be at least 1")
	}
}

func checkBreaker(s BreakerSettings, add addFunc) {
	if s.FailureRatio != 0 && !(s.FailureRatio > 0 && s.FailureRatio <= 1) {
		add("FailureRatio", "must be above 0 and at most 1")
	}
	notNegative(add, "Window", s.Window)
	notNegative(add, "ProbeInterval", s.ProbeInterval)
	notNegative(add, "MaxProbeInterval", s.MaxProbeInterval)
	if d := s.WithDefaults(); d.MaxProbeInterval < d.ProbeInterval {
		add("MaxProbeInterval", "%v is below the probe interval %v", d.MaxProbeInterval, d.ProbeInterval)
	}
}

// notNegative refuses a negative v: zero means the default, and a negative
// value is a mistake rather than a wish for the default.
func notNegative[T int | time.Duration](add addFunc, field string, v T) {
	if v < 0 {
		add(field, "must not be negative")
	}
}

// or is v, or d when v is zero.
func or[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}
