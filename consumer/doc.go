// Package consumer is the agentrelay pipeline: it takes messages off
// JetStream durable pull consumers, one per Route, turns each into a call of
// a route's agent trigger, and settles the message by what the call
// returned:
//
//   - Ack when the API accepted the event;
//   - Retry (nak with a delay) on a transient failure, reusing the same
//     Idempotency-Key on the next delivery;
//   - DeadLetter: publish a copy with the reason to the dead-letter stream,
//     wait for JetStream's publish ack, and only then terminate the original.
//
// The choice is made by one pure function, Decide, from the Outcome of the
// attempt, the delivery attempt number and the route's RetryPolicy. The rest
// of the package is the I/O around it: pulling (Relay, sized to each route's
// free in-flight slots), route health, ordering, and settling. The message
// contract is internal/event's, the dead-letter stream internal/deadletter's.
package consumer
