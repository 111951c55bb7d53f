// Package observe is what the relay tells about its work, for metrics: the
// Observer interfaces it calls and the closed sets of label values they
// carry. internal/telemetry's Metrics implement them with Prometheus; Nop
// observes nothing.
package observe

import "github.com/agentrelay/agentrelay/internal/verdict"

// Observer is told what the relay does, for metrics. The relay calls it
// from many goroutines at once. internal/telemetry's Metrics is the
// Prometheus one; Options.Observer left nil observes nothing.
type Observer interface {
	// ObserveRoute returns the observer of one route. The relay calls it
	// once per route, when the relay is built, so that the per-message
	// calls find everything bound.
	ObserveRoute(name string) RouteObserver
	// SetReady is told when the relay becomes ready and when it stops
	// being (see Relay.Ready).
	SetReady(ready bool)
}

// RouteObserver is told what happens on one route. Label values are
// bounded: outcome classes, reasons, status codes, settle operations,
// health states; never message ids, subjects or keys.
type RouteObserver interface {
	// Prime is told, once when the route starts, every value the labels
	// below can take, so that their series exist at zero from start-up.
	Prime(k KnownLabels)
	// Received: a message was taken off the stream.
	Received()
	// InFlight: delta more messages are being processed.
	InFlight(delta int)
	// SetInFlightLimit: at most n messages are processed at once.
	SetInFlightLimit(n int)
	// Trigger: one trigger call ended with status, or with no answer
	// (status 0) of the kind noAnswer, after seconds.
	Trigger(status int, noAnswer string, seconds float64)
	// Accepted: the API accepted an event at unix time now (seconds);
	// replay says whether it was a dead-letter replay.
	Accepted(now float64, replay bool)
	// Finished: a message was settled by verdict v after attempt
	// deliveries, class being the class of its last attempt, seconds
	// after it was received.
	Finished(v verdict.Verdict, class string, attempt int, seconds float64)
	// RetryWaiting: delta more messages wait out a retry delay.
	RetryWaiting(delta int)
	// DeadLettered: a dead letter of reason was stored.
	DeadLettered(reason string)
	// DeadLetterFailed: a dead letter was not stored; the original is kept
	// and the letter tried again. first says it is the event's first such
	// failure on this replica, so that events are counted apart from
	// publish attempts.
	DeadLetterFailed(first bool)
	// SettleFailed: an ack, nak, term or in_progress (op) failed.
	SettleFailed(op string)
	// PullFailed: a pull request ended in an error.
	PullFailed()
	// SetHealth: the route's health is state, one of states.
	SetHealth(state string, states []string)
	// HealthTransition: the route's health changed.
	HealthTransition(transition, condition string)
	// AgentTrigger: on a route that serves many agents, one call of the
	// agent triggerID ended with status, or with no answer (status 0) of
	// the kind noAnswer. Implementations bound the trigger ids they label.
	AgentTrigger(triggerID string, status int, noAnswer string)
	// AgentHealth: on a route that serves many agents, the agent
	// triggerID went from state from to state to (route health states:
	// "healthy" or a condition).
	AgentHealth(triggerID, from, to string)
	// ConsumerState: the route's consumer as JetStream last reported it.
	ConsumerState(pending uint64, ackPending, redelivered, waiting int, paused bool)
	// SetOldestUnacked: the age of the route's oldest unacknowledged event.
	SetOldestUnacked(seconds float64)
	// OrderedBlocked: on an ordered route, keys wait, the oldest for
	// oldestSeconds.
	OrderedBlocked(keys int, oldestSeconds float64)
}

// KnownLabels lists the values a route's observations can take (see
// RouteObserver.Prime). They follow Decide: what each class can end in.
type KnownLabels struct {
	Finished    []Finish
	Reasons     []string
	Codes       []string // HTTP status codes
	Errors      []string // error kinds of calls without an answer
	SettleOps   []string
	Transitions [][2]string // transition, condition
	States      []string    // route health states; the first is the initial one
}

// Finish is one way a message can be settled: the verdict carried out and
// the class of its last attempt.
type Finish struct {
	Verdict verdict.Verdict
	Class   string
}

// Nop observes nothing.
type Nop struct{}

func (Nop) ObserveRoute(string) RouteObserver { return Nop{} }
func (Nop) SetReady(bool)                     {}

func (Nop) Prime(KnownLabels)                              {}
func (Nop) Received()                                      {}
func (Nop) InFlight(int)                                   {}
func (Nop) SetInFlightLimit(int)                           {}
func (Nop) Trigger(int, string, float64)                   {}
func (Nop) Accepted(float64, bool)                         {}
func (Nop) Finished(verdict.Verdict, string, int, float64) {}
func (Nop) RetryWaiting(int)                               {}
func (Nop) DeadLettered(string)                            {}
func (Nop) DeadLetterFailed(bool)                          {}
func (Nop) SettleFailed(string)                            {}
func (Nop) PullFailed()                                    {}
func (Nop) SetHealth(string, []string)                     {}
func (Nop) HealthTransition(string, string)                {}
func (Nop) AgentTrigger(string, int, string)               {}
func (Nop) AgentHealth(string, string, string)             {}
func (Nop) ConsumerState(uint64, int, int, int, bool)      {}
func (Nop) SetOldestUnacked(float64)                       {}
func (Nop) OrderedBlocked(int, float64)                    {}
