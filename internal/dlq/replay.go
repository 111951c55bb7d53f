package dlq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/subject"
)

// Route is what replay needs to know of one configured route.
type Route struct {
	Name   string
	Stream string // the work stream its consumer reads
	// TriggerID is the trigger it calls; "" for a route that serves many
	// agents (ServesManyAgents).
	TriggerID string
	// Filters are the subjects its consumer captures: its filter subjects,
	// or its stream's subjects when it has none.
	Filters []string
	// Contract is its message contract, resolved (Contract.WithDefaults)
	// and with its mapping compiled: a corrected body must pass it, and a
	// route that maps its trigger id sends each replay where the mapping
	// says, among Contract.AllowedTriggerIDs.
	Contract event.Contract
}

// ServesManyAgents reports whether the route takes each event's trigger id
// from the event (its mapping's trigger_id) rather than calling one.
func (r Route) ServesManyAgents() bool { return r.Contract.Mapping.MapsTriggerID() }

// Target is where a replay goes: the route whose stream stores it, and the
// trigger its event calls.
type Target struct {
	Route Route
	// TriggerID is the trigger the route calls for the replay: its own,
	// or, on a route that serves many agents, the one its mapping gives
	// the event now; "" when that cannot be told before the worker reads
	// the replay (the letter was read without its body, or the route's
	// mapping fails on it).
	TriggerID string
}

// Policy says where dead letters may be replayed.
type Policy struct {
	Routes []Route
	// AllowTriggerChange replays letters whose Agentrelay-Trigger-Id is
	// not the trigger their route calls now (its trigger id was corrected
	// after they were dead-lettered), or, on a route that serves many
	// agents, not the one its mapping gives the event now. Without it they
	// are refused: a letter that names one agent must not trigger another
	// unasked. A trigger id outside a route's allowed_trigger_ids is
	// refused even so (ErrTriggerNotAllowed).
	AllowTriggerChange bool
	// ForcePoison replays letters whose reason blames the message itself
	// (PoisonReasons) as they are. Without it they are refused unless
	// given a corrected body (Letter.WithBody): unchanged, they would only
	// be dead-lettered again.
	ForcePoison bool
}

// Consumes reports whether the route's consumer captures subject (NATS
// matching: "*" one token, a final ">" one or more).
func (r Route) Consumes(subj string) bool {
	return slices.ContainsFunc(r.Filters, func(f string) bool { return subject.Matches(f, subj) })
}

func (p Policy) route(name string) (Route, bool) {
	for _, r := range p.Routes {
		if r.Name == name {
			return r, true
		}
	}
	return Route{}, false
}

// ErrRefused is wrapped by every Refusal.
var ErrRefused = errors.New("replay refused")

// ErrTriggerChanged is wrapped by the refusal of a letter whose route now
// calls another trigger (see Policy.AllowTriggerChange).
var ErrTriggerChanged = errors.New("the route's trigger changed")

// ErrTriggerNotAllowed is wrapped by the refusal of a letter, on a route
// that serves many agents, for a trigger id outside the route's
// allowed_trigger_ids (the list was narrowed since), or of one whose event
// the route's mapping now gives such an id: the worker would never call it.
var ErrTriggerNotAllowed = errors.New("the trigger id is not in the route's allowed_trigger_ids")

// ErrPoison is wrapped by the refusal of a poison letter (see
// Policy.ForcePoison) and of a corrected body the route would refuse too.
var ErrPoison = errors.New("the message itself is at fault")

// ErrBodyOmitted is wrapped by the refusal of a letter stored without its
// body (deadletter.HeaderBodyOmitted): replayed, it would be an empty event.
var ErrBodyOmitted = errors.New("the dead letter holds no body")

// Refusal says why a dead letter is not replayed. The letter is left in
// place, and the run goes on with the next one.
type Refusal struct {
	Seq    uint64
	Reason string
	Err    error // a more specific cause (ErrTriggerChanged), or nil
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("dead letter %d not replayed: %s", r.Seq, r.Reason)
}

// Unwrap gives ErrRefused and the specific cause, if any.
func (r *Refusal) Unwrap() []error {
	if r.Err != nil {
		return []error{ErrRefused, r.Err}
	}
	return []error{ErrRefused}
}

// subjectProblem says why a replay may not be published to subject, or ""
// when it may. Replay publishes with the operator's credentials, so a
// subject the server acts on ($JS.API…, $SYS…, $KV…, $O…, any "$"
// subject, reply inboxes) is refused whatever the configuration says, and
// so is anything that is not one plain literal subject.
func subjectProblem(subject string) string {
	switch {
	case subject == "":
		return fmt.Sprintf("it has no %s header: nowhere to replay it", deadletter.HeaderSubject)
	case strings.HasPrefix(subject, "$"):
		return fmt.Sprintf("%q is a system subject ($JS, $SYS, $KV, $O, ... are the server's own)", subject)
	case strings.HasPrefix(subject, "_INBOX") || strings.HasPrefix(subject, "_R_."):
		// Any inbox: nats.go's default _INBOX. and every role's own
		// prefix (_INBOX_agentrelay_worker., _INBOX_agentrelay_sre., ...).
		return fmt.Sprintf("%q is a system subject (a reply inbox)", subject)
	case !utf8.ValidString(subject):
		return fmt.Sprintf("%q is not valid UTF-8", subject)
	}
	for _, r := range subject {
		if r == ' ' || !unicode.IsPrint(r) {
			return fmt.Sprintf("%q holds whitespace or a control character", subject)
		}
	}
	for _, t := range strings.Split(subject, ".") {
		switch t {
		case "":
			return fmt.Sprintf("%q has an empty token", subject)
		case "*", ">":
			return fmt.Sprintf("%q has a wildcard: a replay goes to one subject", subject)
		}
	}
	return ""
}

// Check decides whether l may be replayed under p, and returns where it
// goes. It refuses (with a *Refusal) a letter
//   - whose original subject is not a plain literal subject, or is a system
//     subject;
//   - that does not sit on the dead-letter subject its original subject maps
//     to (DeadLetterConfig.Subject): it was moved or forged;
//   - whose route is missing or not configured;
//   - whose trigger is not the one its route calls (unless
//     p.AllowTriggerChange); on a route that serves many agents, whose
//     trigger is outside the route's allowed_trigger_ids, or whose event
//     the route's mapping now gives an id outside them
//     (ErrTriggerNotAllowed), or another id than the letter's (unless
//     p.AllowTriggerChange);
//   - whose original subject its route does not consume: replayed there it
//     would reach another route's agent, or none;
//   - that was stored without its body, unless given a corrected one
//     (Letter.WithBody): its replay would be an empty event;
//   - whose reason blames the message itself (PoisonReasons), unless given
//     a corrected body or p.ForcePoison;
//   - whose corrected body its route's contract refuses.
//
// The event is read as the worker will read its replay (event.Contract.Read
// on the replay's subject, body and headers): a mapping may read the
// subject's tokens. Check reads nothing from the server: a dry run shows
// exactly what a replay would refuse before publishing.
func (s *Store) Check(ctx context.Context, p Policy, l Letter) (Target, error) {
	refuse := func(cause error, format string, a ...any) (Target, error) {
		return Target{}, &Refusal{Seq: l.Seq, Reason: fmt.Sprintf(format, a...), Err: cause}
	}
	if problem := subjectProblem(l.OrigSubject); problem != "" {
		return refuse(nil, "%s", problem)
	}
	if want := s.cfg.Subject(l.OrigSubject); l.Subject != want {
		return refuse(nil, "it is stored on dead-letter subject %q, but a dead letter of %q is stored on %q: moved or forged", l.Subject, l.OrigSubject, want)
	}
	if l.Route == "" {
		return refuse(nil, "it has no %s header", deadletter.HeaderRoute)
	}
	r, ok := p.route(l.Route)
	if !ok {
		return refuse(nil, "no route %q in the configuration", l.Route)
	}
	allowed := r.Contract.AllowedTriggerIDs
	switch {
	case !r.ServesManyAgents():
		if l.TriggerID != r.TriggerID && !p.AllowTriggerChange {
			return refuse(ErrTriggerChanged, "it was for trigger %q, but route %s calls %q", l.TriggerID, r.Name, r.TriggerID)
		}
	case l.TriggerID != "" && !allowed.Match(l.TriggerID):
		// A letter with no trigger id was refused before its id was
		// known (an invalid CloudEvent, a failed mapping): its replay's
		// id is checked below, from the event.
		return refuse(ErrTriggerNotAllowed, "it was for trigger %q, which route %s's allowed_trigger_ids (%s) do not allow", l.TriggerID, r.Name, allowed)
	}
	if !r.Consumes(l.OrigSubject) {
		if len(r.Filters) == 0 {
			return refuse(nil, "route %s consumes no subject (does stream %s exist?)", r.Name, r.Stream)
		}
		return refuse(nil, "route %s does not consume %q (it consumes %s)", r.Name, l.OrigSubject, strings.Join(r.Filters, ", "))
	}
	switch {
	case l.BodyOmitted != "" && !l.Corrected:
		return refuse(ErrBodyOmitted, "it was stored without its body (%s: %s, %s bytes, sha256 %s); replayed it would be an empty event: give the body with --body-file",
			deadletter.HeaderBodyOmitted, l.BodyOmitted, l.Header.Get(deadletter.HeaderBodySize), l.Header.Get(deadletter.HeaderBodySHA256))
	case l.Poison() && !l.Corrected && !p.ForcePoison:
		return refuse(ErrPoison, "its reason %s blames the message itself, so unchanged it would be dead-lettered again: correct it with --body-file, or --force to replay it as it is", l.Reason)
	}
	target := Target{Route: r, TriggerID: r.TriggerID}
	if l.Data == nil || (!l.Corrected && !r.ServesManyAgents()) {
		// Read without its body, or nothing to learn from the body: an
		// unchanged event goes to the one trigger its route calls.
		return target, nil
	}
	d, err := s.readReplay(ctx, r, l)
	if err != nil {
		return Target{}, err
	}
	switch {
	case l.Corrected && d.Reason != "":
		return refuse(ErrPoison, "the corrected body would be dead-lettered again by route %s: %s: %v", r.Name, d.Reason, d.Err)
	case d.Reason == deadletter.ReasonTriggerNotAllowed:
		return refuse(ErrTriggerNotAllowed, "route %s would dead-letter it again: %v", r.Name, d.Err)
	case !d.TriggerID.IsZero():
		target.TriggerID = d.TriggerID.String()
	}
	if l.TriggerID != "" && target.TriggerID != "" && target.TriggerID != l.TriggerID && !p.AllowTriggerChange {
		return refuse(ErrTriggerChanged, "it was for trigger %q, but route %s's mapping now gives it %q", l.TriggerID, r.Name, target.TriggerID)
	}
	return target, nil
}

// readReplay reads l's replay as route r's worker will: its subject, body
// and headers through r's contract. The key it carries is beside the
// point here; a letter without its original subject has no replay.
func (s *Store) readReplay(ctx context.Context, r Route, l Letter) (event.Decoded, error) {
	m, err := s.ReplayMsg(l, false)
	if err != nil {
		return event.Decoded{}, err
	}
	d := r.Contract.Read(ctx, event.Message{Subject: m.Subject, Data: m.Data, Header: m.Header})
	if err := ctx.Err(); err != nil {
		return event.Decoded{}, err
	}
	return d, nil
}

// NewKey is the Idempotency-Key `replay --new-key` gives a dead letter: new,
// the same on every replay of that letter, different for a later letter
// that reuses its sequence, and always a valid key whatever the stream is
// called (event.DerivedKey encodes a name a key may not hold).
func NewKey(dlStream string, seq uint64, stored time.Time) string {
	return event.DerivedKey("replay-"+dlStream, seq, stored.UnixNano())
}

// ReplayMsg builds the message that replays l to its original subject: the
// original body (or the corrected one, see Letter.WithBody) and the
// producer's headers, the Idempotency-Key of the original call (or, with
// newKey, NewKey), the event's history (deadletter.HeaderReplayOf and the other
// replay headers) and none of the dead-letter bookkeeping. It does not
// judge whether l may be replayed (see Check), but it never builds an
// empty event from a letter stored without its body.
func (s *Store) ReplayMsg(l Letter, newKey bool) (*nats.Msg, error) {
	if l.OrigSubject == "" {
		return nil, fmt.Errorf("dead letter %d has no %s header: cannot tell where to replay it", l.Seq, deadletter.HeaderSubject)
	}
	if l.Data == nil {
		return nil, fmt.Errorf("dead letter %d was read without its body", l.Seq)
	}
	if l.BodyOmitted != "" && !l.Corrected {
		return nil, fmt.Errorf("dead letter %d: %w (%s)", l.Seq, ErrBodyOmitted, l.BodyOmitted)
	}
	key := l.IdempotencyKey
	if newKey {
		key = NewKey(s.cfg.Stream, l.Seq, l.Stored)
	}
	// The producer's headers, the key, and the event's history, one
	// replay on (deadletter.ReplayHeader says what is kept and what not).
	h := deadletter.ReplayHeader(l.Header, key, l.Next(l.ID(s.cfg.Stream), l.Corrected))
	return &nats.Msg{Subject: l.OrigSubject, Data: l.Data, Header: h}, nil
}

// ReplayKey is the Idempotency-Key the worker will use for m, the replay of
// l: the key m carries, else (a letter whose key could not be used) the
// replay's message id, computed as the worker computes it
// (event.IdempotencyKey). An error means the worker would dead-letter
// the replay as invalid_idempotency_key.
func (s *Store) ReplayKey(l Letter, m *nats.Msg) (string, error) {
	h := make(nats.Header, len(m.Header)+1)
	for k, v := range m.Header {
		h[k] = v
	}
	h.Set(jetstream.MsgIDHeader, l.ID(s.cfg.Stream).ReplayMsgID())
	return event.IdempotencyKey(h, &jetstream.MsgMetadata{})
}

// Replay checks l against p (see Check), publishes its replay to its
// route's stream and, once that stream acknowledged it, deletes l. The
// replay keeps l's trace context, or carries the span context of ctx when
// it has one (see TraceReplay). It
// returns the replay's publish ack. A refused letter (a *Refusal, also
// for a publish the route's stream would not store) is left in place.
//
// A publish the work stream reports as a duplicate deletes the letter only
// when the stored message it matched is this letter's replay (an earlier,
// interrupted run); a different message under the same id means the letter
// never reached the API, so it stays.
func (s *Store) Replay(ctx context.Context, p Policy, l Letter, newKey bool) (*jetstream.PubAck, error) {
	target, err := s.Check(ctx, p, l)
	if err != nil {
		return nil, err
	}
	r := target.Route
	m, err := s.ReplayMsg(l, newKey)
	if err != nil {
		return nil, err
	}
	injectTrace(ctx, m.Header) // a traced replay (TraceReplay): its own span's context
	ack, err := s.js.PublishMsg(ctx, m,
		jetstream.WithMsgID(l.ID(s.cfg.Stream).ReplayMsgID()),
		jetstream.WithExpectStream(r.Stream))
	if err != nil {
		var apiErr *jetstream.APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeStreamNotMatch:
			return nil, &Refusal{Seq: l.Seq, Reason: fmt.Sprintf("%q is stored by another stream than route %s's %s", m.Subject, r.Name, r.Stream)}
		case errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("replaying dead letter %d to %s: no stream captures that subject: %w", l.Seq, m.Subject, err)
		}
		return nil, fmt.Errorf("replaying dead letter %d to %s: %w", l.Seq, m.Subject, err)
	}
	if ack.Stream != r.Stream {
		return ack, fmt.Errorf("replaying dead letter %d: %s was stored by stream %q, not route %s's %s", l.Seq, m.Subject, ack.Stream, r.Name, r.Stream)
	}
	if ack.Duplicate {
		if err := s.sameReplay(ctx, l, m, ack); err != nil {
			return ack, err
		}
	}
	if err := s.Delete(ctx, l.Seq); err != nil && !notFound(err) {
		return ack, fmt.Errorf("dead letter %d was replayed (stream %s seq %d) but could not be deleted; running the replay again is safe: %w", l.Seq, ack.Stream, ack.Sequence, err)
	}
	return ack, nil
}

// jsErrCodeStreamNotMatch is the server's "expected stream does not match"
// (JSStreamNotMatchErr), which the client has no constant for.
const jsErrCodeStreamNotMatch jetstream.ErrorCode = 10060

// sameReplay reports (as a *Refusal) when the message a duplicate publish
// of m matched is not m: another event published under the replay's id.
func (s *Store) sameReplay(ctx context.Context, l Letter, m *nats.Msg, ack *jetstream.PubAck) error {
	st, err := s.js.Stream(ctx, ack.Stream)
	if err != nil {
		return fmt.Errorf("replaying dead letter %d: checking the duplicate in %s: %w", l.Seq, ack.Stream, err)
	}
	stored, err := st.GetMsg(ctx, ack.Sequence)
	if notFound(err) {
		return &Refusal{Seq: l.Seq, Reason: fmt.Sprintf(
			"its replay was deduplicated by stream %s against message %d, which is gone (consumed) and cannot be compared; run the replay again after the stream's duplicate window (%v)",
			ack.Stream, ack.Sequence, st.CachedInfo().Config.Duplicates)}
	}
	if err != nil {
		return fmt.Errorf("replaying dead letter %d: checking the duplicate in %s: %w", l.Seq, ack.Stream, err)
	}
	if stored.Subject != m.Subject || stored.Header.Get(deadletter.HeaderReplayOf) != m.Header.Get(deadletter.HeaderReplayOf) || !bytes.Equal(stored.Data, m.Data) {
		return &Refusal{Seq: l.Seq, Reason: fmt.Sprintf(
			"its replay was deduplicated by stream %s against message %d, which is another event (published with this letter's replay id)",
			ack.Stream, ack.Sequence)}
	}
	return nil
}
