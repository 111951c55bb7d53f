package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/routestatus"
)

// Agent is the trigger a route calls. *agentapi.Agent implements it.
type Agent interface {
	ID() agentapi.TriggerID
	Trigger(ctx context.Context, ev agentapi.Event) (status int, err error)
}

// Agents are the triggers a route that serves many agents calls, chosen
// per event by the trigger id its contract reads (event.Decoded.TriggerID).
// Agent returns the agent for id, or an error when the route may not call
// it (the event is then dead-lettered as trigger_not_allowed, without a
// call). It is called for every event: implementations cache.
type Agents interface {
	Agent(id agentapi.TriggerID) (Agent, error)
}

// DeliverPolicy says where a newly created consumer starts in its stream.
type DeliverPolicy string

// Deliver policies. They apply when the consumer is first created; JetStream
// does not allow changing them later.
const (
	DeliverAll DeliverPolicy = "all" // every message in the stream (default)
	DeliverNew DeliverPolicy = "new" // only messages published from now on
)

// Ordering says which events of a route are triggered in stream order.
type Ordering string

// Orderings.
const (
	OrderNone              Ordering = "none"             // events run in parallel up to MaxInFlight, in any order
	OrderByConversationKey Ordering = "conversation_key" // events of one conversation key run one at a time, in stream order
)

// orderGroup is the priority group of an ordered route's consumer: the
// pinned-client policy makes one replica own the route at a time, the others
// hot standbys.
const orderGroup = "agentrelay"

// orderPinnedTTL is how long an ordered route's owner may go without a pull
// before the server hands the route to another replica. It bounds how long a
// crashed owner's keys wait, with AckWait for the messages it held.
const orderPinnedTTL = 5 * time.Second

// Route defaults.
const (
	DefaultMaxInFlight = 64
	// DefaultAckWait is short so that a crashed replica's messages go to
	// another one within seconds; a call that takes longer is kept alive
	// with InProgress every third of it.
	DefaultAckWait = 4 * time.Second
	// DefaultAckPendingFactor × MaxInFlight is the default MaxAckPending:
	// room for several replicas, for the messages a crashed one stranded
	// until AckWait, and for messages waiting out a retry delay. Those
	// last are what a few events that keep failing leave in the window
	// for their whole life: JetStream counts a message naked with a delay
	// as unsettled. With too small a window they fill it, and the route
	// stops taking good events (issue 17): sixteen times the calls in
	// flight leaves room for hundreds of them. The window costs nothing
	// while it is empty; pulls stay sized to free slots.
	DefaultAckPendingFactor = 16
	// OrderedHoldFactor × MaxInFlight is how many messages the owner of an
	// ordered route holds (its MaxAckPending). Events of a key wait behind
	// the key's running one, and a key whose event keeps failing keeps its
	// later events waiting in the window until that event is settled:
	// the window must be wide enough for such a backlog and for the other
	// keys to keep flowing beside it. The owner holds what is in the
	// window in memory.
	OrderedHoldFactor = 16
)

// Route connects a set of subjects of a stream to one agent trigger through
// its own durable pull consumer.
type Route struct {
	// Name identifies the route in logs, metrics and dead letters.
	Name string
	// Stream the route reads from. It must exist.
	Stream string
	// Subjects filter the stream; empty means every subject.
	Subjects []string
	// Durable is the consumer's name. Default "agentrelay-<Name>".
	Durable string
	// Deliver is where a new consumer starts. Default DeliverAll.
	Deliver DeliverPolicy
	// Agent is the trigger called for each message that names none.
	Agent Agent
	// Agents, when set, are the triggers of messages whose contract
	// reads a trigger id from them (event.Contract.Mapping); such a
	// message is never sent to Agent.
	Agents Agents
	// Contract is the message contract.
	Contract event.Contract
	// MaxInFlight is how many messages one replica processes at once.
	// Default DefaultMaxInFlight.
	MaxInFlight int
	// MaxAckPending is the consumer's limit of unsettled messages across
	// all replicas, those waiting out a retry delay included. Default
	// DefaultAckPendingFactor × MaxInFlight; an ordered route's is always
	// OrderedHoldFactor × MaxInFlight.
	MaxAckPending int
	// AckWait is how long JetStream waits for a settle before redelivering
	// to another replica. A message being worked on is kept alive with
	// InProgress every AckWait/3, so calls may take longer. Default
	// DefaultAckWait.
	AckWait time.Duration
	// MaxRate caps the route's calls per second on this replica; 0 means
	// no cap.
	MaxRate float64
	// Ordering, when OrderByConversationKey, triggers the events of one
	// conversation key one at a time, in stream order, across replicas.
	// Default OrderNone.
	Ordering Ordering
	// Retry is the retry policy.
	Retry RetryPolicy
	// Breaker configures the route's circuit breaker.
	Breaker BreakerSettings
}

// agentFor returns the agent an event for trigger id is sent to: Agent
// when id is zero, else Agents' agent for id.
func (r Route) agentFor(id agentapi.TriggerID) (Agent, error) {
	if id.IsZero() {
		if r.Agent == nil {
			return nil, fmt.Errorf("route %s serves the agents its events name, and the event names none", r.Name)
		}
		return r.Agent, nil
	}
	if r.Agents == nil {
		return nil, fmt.Errorf("route %s calls one agent, and the event names trigger %s", r.Name, id)
	}
	return r.Agents.Agent(id)
}

// WithDefaults returns r with zero fields set to their defaults.
func (r Route) WithDefaults() Route {
	if r.Durable == "" {
		r.Durable = routestatus.DefaultDurable(r.Name)
	}
	if r.Deliver == "" {
		r.Deliver = DeliverAll
	}
	if r.Ordering == "" {
		r.Ordering = OrderNone
	}
	if r.MaxInFlight <= 0 {
		r.MaxInFlight = DefaultMaxInFlight
	}
	switch {
	case r.Ordering == OrderByConversationKey:
		// One replica owns an ordered route, and one that takes it over
		// must be able to hold every unsettled message before it starts
		// (see sequencer): the consumer lets no more be unsettled than
		// one replica holds. It holds more than it runs, so that events
		// waiting behind their key's running one leave other keys room.
		r.MaxAckPending = OrderedHoldFactor * r.MaxInFlight
	case r.MaxAckPending <= 0:
		r.MaxAckPending = DefaultAckPendingFactor * r.MaxInFlight
	}
	if r.AckWait <= 0 {
		r.AckWait = DefaultAckWait
	}
	r.Contract = r.Contract.WithDefaults()
	r.Retry = r.Retry.WithDefaults()
	r.Breaker = r.Breaker.WithDefaults()
	return r
}

// ConsumerConfig is the JetStream consumer the route needs. MaxDeliver is
// unlimited on purpose: the worker counts attempts itself and dead-letters at
// RetryPolicy.MaxAttempts. A server-side limit would make JetStream stop
// delivering a message silently, with no dead letter.
func (r Route) ConsumerConfig() jetstream.ConsumerConfig {
	r = r.WithDefaults()
	cfg := jetstream.ConsumerConfig{
		Durable:       r.Durable,
		Description:   fmt.Sprintf("agentrelay route %s", r.Name),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: r.MaxAckPending,
		Metadata:      map[string]string{"agentrelay_route": r.Name},
	}
	if r.Agent != nil {
		cfg.Metadata["agentrelay_trigger_id"] = r.Agent.ID().String()
	}
	if r.Deliver == DeliverNew {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if r.Ordering == OrderByConversationKey {
		cfg.PriorityPolicy = jetstream.PriorityPolicyPinned
		cfg.PriorityGroups = []string{orderGroup}
		cfg.PinnedTTL = orderPinnedTTL
		cfg.Metadata["agentrelay_ordering"] = string(r.Ordering)
	}
	switch len(r.Subjects) {
	case 0:
	case 1:
		cfg.FilterSubject = r.Subjects[0]
	default:
		cfg.FilterSubjects = r.Subjects
	}
	return cfg
}
