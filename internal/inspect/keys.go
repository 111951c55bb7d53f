package inspect

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/event"
)

// eventKey is the Idempotency-Key the worker sends a stored message with on
// one route, and where the key comes from.
type eventKey struct {
	route   string // "" when no route consumes the message
	key     string
	from    string
	problem string // why the message has no usable key ("" when it has one)
}

// keysOf are m's keys on the routes of stream that consume its subject, in
// the configuration's order, as each route's contract reads m
// (event.Contract.Read): the Idempotency-Key header, else the Nats-Msg-Id,
// else, on a CloudEvents route, the event's source and id
// (event.CloudEventKey), else the key derived from the stream, sequence
// and stored time. A message no route consumes is keyed as a JSON route
// would key it. m.Meta is m's stream, sequence and stored time.
func keysOf(ctx context.Context, routes []dlq.Route, stream string, m event.Message) []eventKey {
	var out []eventKey
	for _, r := range routes {
		if r.Stream == stream && r.Consumes(m.Subject) {
			k := keyOn(ctx, r.Contract, m)
			k.route = r.Name
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		out = append(out, keyOn(ctx, event.Contract{}.WithDefaults(), m))
	}
	return out
}

// keyOn is m's key as contract c reads it.
func keyOn(ctx context.Context, c event.Contract, m event.Message) eventKey {
	d := c.Read(ctx, m)
	if d.KeyErr != nil {
		return eventKey{problem: d.KeyErr.Error() + ": the worker dead-letters it as invalid_idempotency_key"}
	}
	k := eventKey{key: d.Event.IdempotencyKey}
	switch {
	case header(m.Header, event.HeaderIdempotencyKey):
		k.from = "its Idempotency-Key header"
	case header(m.Header, jetstream.MsgIDHeader):
		k.from = "its Nats-Msg-Id"
	case m.Meta != nil && k.key != event.DerivedKey(m.Meta.Stream, m.Meta.Sequence.Stream, m.Meta.Timestamp.UnixNano()):
		k.from = "its CloudEvent's source and id (no message id)"
	default:
		k.from = "derived from stream, sequence and stored time (no message id)"
	}
	return k
}

// hasOwnKey reports whether h sets the key itself (an Idempotency-Key or a
// Nats-Msg-Id header, usable or not): then no route's contract keys the
// message otherwise, and its headers alone give its key.
func hasOwnKey(h nats.Header) bool {
	return header(h, event.HeaderIdempotencyKey) || header(h, jetstream.MsgIDHeader)
}

// header reports whether h sets header name, in any case (as the worker
// reads a key: event.LookupHeader).
func header(h nats.Header, name string) bool {
	v, conflict := event.LookupHeader(h, name)
	return v != "" || conflict
}
