package event

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/cloudevents"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/jsonvalue"
	"github.com/agentrelay/agentrelay/internal/mapping"
)

// Message is a NATS message as a route's contract reads it.
type Message struct {
	Subject string
	Data    []byte
	Header  nats.Header
	// Meta is the message's JetStream metadata, for the key derived from
	// the stream and sequence. Without it, a message that carries no key
	// of its own gets none.
	Meta *jetstream.MsgMetadata
}

// Decoded is a message read by a route's contract: the call to make, or
// why there is none.
type Decoded struct {
	// Event is the call's body and Idempotency-Key.
	Event agentapi.Event
	// TriggerID is the trigger the event is for when the route maps one;
	// zero means the route's own.
	TriggerID agentapi.TriggerID
	// KeyErr says why the message's own key (Idempotency-Key or
	// Nats-Msg-Id) cannot be sent (deadletter.ReasonInvalidIdempotencyKey).
	KeyErr error
	// Reason and Err say why the message breaks the contract: it is
	// dead-lettered without a call.
	Reason deadletter.Reason
	Err    error
}

// Read reads a message as the contract says and returns the call to make.
// c is resolved (Contract.WithDefaults).
//
// The body gives the input (and conversation key):
//
//   - BodyJSON: the API's JSON (see Decode); a route that maps its input
//     takes any JSON object or value instead, as the mapping's data;
//   - BodyText: the whole body (its conversation key from a header);
//   - BodyCloudEvents: a CloudEvent, whose data as text is the input.
//
// The Mapping, when there is one, then sets the fields it maps: the input
// and conversation key replace the body's, and the trigger id, which must
// match AllowedTriggerIDs, chooses the agent.
//
// The Idempotency-Key is, in order: the Idempotency-Key header; the
// Nats-Msg-Id header; a CloudEvent's source and id (CloudEventKey); the key
// derived from the stream, sequence and time (DerivedKey).
func (c Contract) Read(ctx context.Context, m Message) Decoded {
	var d Decoded
	// The key first: a message refused below is dead-lettered with it.
	key, keyErr := headerKey(m.Header)
	switch {
	case keyErr != nil:
		d.KeyErr = keyErr
	case key != "":
		d.Event.IdempotencyKey = key
	case m.Meta != nil:
		d.Event.IdempotencyKey = DerivedKey(m.Meta.Stream, m.Meta.Sequence.Stream, m.Meta.Timestamp.UnixNano())
	}
	var ce *cloudevents.Event
	var data any
	parsed := false
	switch {
	case c.Format == BodyCloudEvents:
		if len(m.Data) > c.maxJSONBody() {
			return d.poison(deadletter.ReasonInputTooLarge, fmt.Errorf("body is %d bytes, limit %d", len(m.Data), c.maxJSONBody()))
		}
		var err error
		if ce, err = cloudevents.Read(m.Data, m.Header); err != nil {
			return d.poison(deadletter.ReasonInvalidCloudEvent, err)
		}
	case c.Mapping.MapsInput() && c.Format != BodyText:
		// The body is the producer's own JSON: only the mapping reads it.
		if len(m.Data) > c.maxJSONBody() {
			return d.poison(deadletter.ReasonInputTooLarge, fmt.Errorf("body is %d bytes, limit %d", len(m.Data), c.maxJSONBody()))
		}
		if !utf8.Valid(m.Data) {
			return d.poison(deadletter.ReasonInvalidUTF8, errors.New("body is not valid UTF-8"))
		}
		v, err := jsonvalue.Parse(m.Data)
		if err != nil {
			return d.poison(deadletter.ReasonInvalidJSON, fmt.Errorf("body: %w", boundedError{err, maxDecodeError}))
		}
		data, parsed = v, true
	default:
		ev, reason, err := c.decodeBody(m.Data, m.Header)
		if reason != "" {
			return d.poison(reason, err)
		}
		ev.IdempotencyKey = d.Event.IdempotencyKey
		d.Event = ev
	}
	if ce != nil && key == "" && keyErr == nil {
		d.Event.IdempotencyKey = CloudEventKey(ce.Source(), ce.ID())
	}
	if ce != nil && !c.Mapping.MapsInput() {
		text, err := ce.Text()
		if err != nil {
			return d.poison(deadletter.ReasonInvalidCloudEvent, err)
		}
		if text == "" {
			return d.poison(deadletter.ReasonMissingInput, errors.New("the CloudEvent has no data to be the input (map an input from its attributes)"))
		}
		d.Event.Input = text
	}
	if c.Mapping != nil {
		ev := mapping.Event{Subject: m.Subject, Header: m.Header, MaxInput: c.MaxInputBytes}
		if ce != nil {
			ev.CE = ce.Attributes
		}
		if c.Mapping.UsesData() {
			switch {
			case parsed:
				ev.Data = data
			case ce != nil:
				v, err := ce.Value()
				if err != nil {
					return d.poison(deadletter.ReasonInvalidCloudEvent, err)
				}
				ev.Data = v
			case c.Format == BodyText:
				ev.Data = d.Event.Input
			default:
				v, err := jsonvalue.Parse(m.Data)
				if err != nil {
					return d.poison(deadletter.ReasonInvalidJSON, fmt.Errorf("body: %w", boundedError{err, maxDecodeError}))
				}
				ev.Data = v
			}
		}
		r, err := c.Mapping.Eval(ctx, &ev)
		// The trigger id is evaluated first: an event for an agent
		// the route may not call says so, whatever else is wrong.
		if r.HasTriggerID {
			id, terr := c.allowed(r.TriggerID)
			if terr != nil {
				return d.poison(deadletter.ReasonTriggerNotAllowed, terr)
			}
			d.TriggerID = id
		}
		switch {
		case errors.Is(err, mapping.ErrInputTooLarge):
			return d.poison(deadletter.ReasonInputTooLarge, err)
		case err != nil:
			return d.poison(deadletter.ReasonMappingFailed, err)
		}
		if r.HasInput {
			d.Event.Input = r.Input
		}
		if r.HasConversationKey {
			d.Event.ConversationKey = r.ConversationKey
		}
	}
	if ce != nil || c.Mapping != nil {
		// The input and key came from the event's data or from
		// expressions: check what decodeBody checks of a body's.
		switch {
		case len(d.Event.Input) > c.MaxInputBytes:
			return d.poison(deadletter.ReasonInputTooLarge, fmt.Errorf("input is %d bytes, limit %d", len(d.Event.Input), c.MaxInputBytes))
		case !utf8.ValidString(d.Event.Input):
			return d.poison(deadletter.ReasonInvalidUTF8, errors.New("the input is not valid UTF-8"))
		}
		if err := agentapi.ValidateConversationKey(d.Event.ConversationKey); err != nil {
			return d.poison(deadletter.ReasonInvalidConversationKey, err)
		}
	}
	return d
}

// poison ends d with reason and err, keeping only the key.
func (d Decoded) poison(reason deadletter.Reason, err error) Decoded {
	return Decoded{
		Event:     agentapi.Event{IdempotencyKey: d.Event.IdempotencyKey},
		TriggerID: d.TriggerID,
		KeyErr:    d.KeyErr,
		Reason:    reason,
		Err:       err,
	}
}

// allowed parses a mapped trigger id and checks it against the route's
// allowed_trigger_ids.
func (c Contract) allowed(s string) (agentapi.TriggerID, error) {
	id, err := agentapi.ParseTriggerID(s)
	if err != nil {
		return agentapi.TriggerID{}, fmt.Errorf("the mapped trigger id is not one: %w", err)
	}
	if !c.AllowedTriggerIDs.Match(s) {
		return agentapi.TriggerID{}, fmt.Errorf("the mapped trigger id %s is not in allowed_trigger_ids (%s)", s, c.AllowedTriggerIDs)
	}
	return id, nil
}

// CloudEventKey is the Idempotency-Key of a CloudEvent whose message sets
// none: the specification makes source and id together unique for each
// distinct event, and a producer that sends an event again sends the same
// pair. It is "ce:" followed by 16 hex digits of the SHA-256 of the source
// (a source is a URI, whose characters a key may not hold) and, after a
// ':', the id itself when it is a valid key in what remains, which keeps it
// recognisable in logs and dead letters; otherwise "ceh:" with the same
// source part and 40 hex digits of the SHA-256 of the id. Both are the same
// on every delivery, and the two forms cannot collide.
func CloudEventKey(source, id string) string {
	src := sha256.Sum256([]byte(source))
	prefix := "ce:" + hex.EncodeToString(src[:8]) + ":"
	if k := prefix + id; agentapi.ValidateIdempotencyKey(k) == nil && id != "" {
		return k
	}
	h := sha256.Sum256([]byte(id))
	return "ceh:" + hex.EncodeToString(src[:8]) + ":" + hex.EncodeToString(h[:20])
}
