// Package consumer is the agentrelay pipeline: it takes messages off
// JetStream durable pull consumers, one per Route, turns each into a call of
// a route's agent trigger, and settles the message by what the call
// returned:
//
//   - Ack when the API accepted the event;
//   - Retry (nak with a delay) on a failure that may pass, reusing the same
//     Idempotency-Key on the next delivery;
//   - DeadLetter: publish a copy with the reason to the dead-letter stream,
//     wait for JetStream's publish ack, and only then terminate the original.
//
// The choice is made by one pure function, Decide, from the Outcome of the
// attempt, what the message has been through (Attempts) and the route's
// RetryPolicy; settlement carries it out once. The message contract is
// internal/event's, the dead-letter format and stream internal/deadletter's.
//
// # Files
//
// Relay and routes:
//   - relay.go: Relay, its Options, set-up and the lifecycle (Run, the drain).
//   - route.go: Route, its defaults and its ConsumerConfig; settings.go the
//     RetryPolicy and BreakerSettings with their defaults; check.go what
//     New refuses.
//   - runner.go: one route on this replica, wiring the pieces below.
//   - bind.go: binding the route's consumer (and re-creating a lost one);
//     drift.go: a consumer that differs from the route.
//
// Pulling (the engine, one lock):
//   - engine.go: keeps the route's slots filled, the look-ahead, the handler
//     goroutines; drain.go: hand-backs and the drain.
//   - pull.go: the pull subscription and its statuses; slots.go the pure
//     slot accounting; pulledmsg.go the relay's own message type;
//     keepalive.go: InProgress for the messages held.
//
// Handling one message:
//   - pipeline.go: decode once, call, Decide; healthgate.go: calling as
//     route health (and the event's agent's) allows, waiting at the gate.
//   - decide.go: Decide, Backoff and the pure adjustments beside it.
//   - settle.go: ack, retry, hand-back, dead letter plus term, and their
//     bookkeeping, once per message.
//   - ledger.go: each message's own failures, and whether it is fresh.
//
// Ordering (the one seam between the shared path and ordering):
//   - policy.go: the policy interface and the unordered policy.
//   - ordered.go: the ordered policy (fence, retry in place); orderedpin.go
//     how its owner holds the pin, and gives it up after a stall;
//     sequencer.go its pure sequencer; callslots.go its call bound;
//     orderedstatus.go what status shows of it.
//
// Route health:
//   - condition.go: the conditions and transitions; health.go the pure state
//     machine; outage.go which calls are evidence of an outage, and when
//     they are enough; aimd.go concurrency under 429; gate.go which held message
//     probes; fleet.go the consumer's pause, shared by every replica, and
//     fleetwatch.go what a replica learns of the others' pauses and resumes;
//     agents.go each agent's health on a route that serves many.
//
// Observing:
//   - observe.go: the lag loop, the oldest unacknowledged event, retry
//     waits, accepted events; labels.go the label values metrics are primed
//     with; trace.go OpenTelemetry spans; status.go RouteStatus.
//
// docs/architecture.md walks one message, and one of an ordered route,
// through these pieces, and lists the locks.
package consumer
