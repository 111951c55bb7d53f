package inspect

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/streamscan"
)

// story tells what happened to message r. withReplays also looks for the
// event's replays in the work stream.
func (x *teller) story(ctx context.Context, r ref, withReplays bool) (EventStory, error) {
	stream, seq := r.stream, r.seq
	s := EventStory{Ref: fmt.Sprintf("%s:%d", stream, seq), Stream: stream, Seq: seq, Routes: []EventRoute{}}
	st, err := x.src.JS.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return s, fmt.Errorf("stream %s does not exist", stream)
	}
	if err != nil {
		return s, err
	}
	info := st.CachedInfo()
	if seq > info.State.LastSeq {
		return s, fmt.Errorf("%w: stream %s has no message %d yet (its last sequence is %d)", ErrNoMessage, stream, seq, info.State.LastSeq)
	}
	m, err := st.GetMsg(ctx, seq)
	var keys []eventKey
	switch {
	case err == nil:
		keys = x.readMessage(ctx, &s, m)
	case isNotFound(err):
		s.CannotTell = append(s.CannotTell, goneText(info))
	default:
		return s, err
	}
	letters, err := x.letters(ctx, &s)
	if err != nil {
		return s, err
	}
	fromLetter(&s, letters)
	if s.Subject == "" && r.subject != "" {
		// Gone from the stream, no dead letter: the search saw its
		// subject on a replay or a letter of it.
		s.Subject = r.subject
	}
	if withReplays && s.Subject != "" {
		if err := x.replays(ctx, st, &s); err != nil {
			return s, err
		}
	}
	if err := x.routeStates(ctx, &s, letters, keys); err != nil {
		return s, err
	}
	if withReplays && len(s.DeadLetters) == 0 {
		s.CannotTell = append(s.CannotTell,
			"how often it was delivered: consumer info counts redeliveries for the whole consumer only (a dead letter records its attempts)")
	}
	return s, nil
}

// readMessage fills s from its message in the stream, and returns its key
// on each route that consumes it (keysOf): s.Key is its key on the first.
func (x *teller) readMessage(ctx context.Context, s *EventStory, m *jetstream.RawStreamMsg) []eventKey {
	h := m.Header
	s.InStream, s.Subject = true, m.Subject
	stored := m.Time.UTC()
	s.Stored, s.Size = &stored, len(m.Data)
	s.MsgID = h.Get(jetstream.MsgIDHeader)
	md := &jetstream.MsgMetadata{Stream: s.Stream, Sequence: jetstream.SequencePair{Stream: s.Seq}, Timestamp: m.Time}
	keys := keysOf(ctx, x.routes, s.Stream, event.Message{Subject: m.Subject, Data: m.Data, Header: h, Meta: md})
	s.Key, s.KeyFrom, s.KeyProblem = keys[0].key, keys[0].from, keys[0].problem
	s.ReplayOf = h.Get(deadletter.HeaderReplayOf)
	s.Origin = h.Get(deadletter.HeaderReplayOrigin)
	s.ReplayCount, _ = strconv.Atoi(h.Get(deadletter.HeaderReplayCount))
	return keys
}

// fromLetter fills what the stream no longer holds from the event's first
// dead letter.
func fromLetter(s *EventStory, letters []dlq.Letter) {
	if s.InStream || len(letters) == 0 {
		return
	}
	l := letters[0]
	s.Subject, s.Key, s.KeyFrom = l.OrigSubject, l.IdempotencyKey, "its dead letter"
	if !l.OrigStored.IsZero() {
		t := l.OrigStored.UTC()
		s.Stored = &t
	}
	if s.Origin == "" && l.Replays > 0 {
		s.ReplayOf, s.ReplayCount = l.ReplayOf, l.Replays
		if o, seq := l.Origin(); o != "" {
			s.Origin = fmt.Sprintf("%s:%d", o, seq)
		}
	}
}

// goneText says why a stream may no longer hold a message.
func goneText(info *jetstream.StreamInfo) string {
	c := info.Config
	why := "deleted, purged, or removed by its limits"
	switch c.Retention {
	case jetstream.WorkQueuePolicy:
		why = "a work-queue stream removes a message once it is acked (accepted or dead-lettered), or it was deleted or purged"
	case jetstream.InterestPolicy:
		why = "an interest stream removes a message once every consumer acked it, or it was deleted or purged"
	default:
		if c.MaxAge > 0 {
			why += fmt.Sprintf(" (max_age %v)", c.MaxAge)
		}
	}
	return fmt.Sprintf("the stream no longer holds the message (%s): its subject, body and key are known only from a dead letter of it", why)
}

// letters finds the dead letters of s's message in the dead-letter stream:
// by the original stream and sequence they carry, searching only the
// letters stored after the message, on the dead-letter subject its subject
// maps to when known, at most x.q.Scan of them.
func (x *teller) letters(ctx context.Context, s *EventStory) ([]dlq.Letter, error) {
	if x.dl == nil {
		return nil, nil
	}
	f := dlq.Filter{Subject: s.Subject}
	if s.Stored != nil {
		f.Since = *s.Stored
	}
	var out []dlq.Letter
	n := 0
	err := x.dl.Scan(ctx, f, true, func(l dlq.Letter) (bool, error) {
		n++
		if l.Stream == s.Stream && l.StreamSeq == s.Seq {
			out = append(out, l)
		}
		return n < x.q.Scan, nil
	})
	if n >= x.q.Scan {
		s.CannotTell = append(s.CannotTell, fmt.Sprintf("whether a dead letter of it lies beyond the %s searched (--scan for more)", Count(x.q.Scan, "dead letter", "dead letters")))
	}
	for _, l := range out {
		s.DeadLetters = append(s.DeadLetters, EventLetter{
			Seq: l.Seq, Stored: l.Stored.UTC(), Route: l.Route, Reason: l.Reason, Status: l.Status, Error: l.Error,
			Attempts: l.Attempts, Total: l.TotalAttempts(), Replays: l.Replays, Of: s.Ref,
		})
	}
	return out, err
}

// routeStates adds s's state on each route whose consumer captures it;
// keys are its keys on them (keysOf), when its message was read.
func (x *teller) routeStates(ctx context.Context, s *EventStory, letters []dlq.Letter, keys []eventKey) error {
	for _, rt := range x.routes {
		if rt.Stream != s.Stream || (s.Subject != "" && !rt.Consumes(s.Subject)) {
			continue
		}
		er, err := x.routeState(ctx, rt, s, letters)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k.route == rt.Name && (k.key != s.Key || k.problem != s.KeyProblem) {
				// Another contract than the first route's: a
				// CloudEvents route beside a JSON one, say.
				er.Key, er.KeyFrom, er.KeyProblem = k.key, k.from, k.problem
			}
		}
		s.Routes = append(s.Routes, er)
	}
	if len(s.Routes) == 0 {
		s.CannotTell = append(s.CannotTell, fmt.Sprintf("no configured route consumes %s: agentrelay does not deliver it", orUnknown(s.Subject)))
	}
	return nil
}

// routeState is the event's state on route r, from its consumer's info and
// the dead letters and replays found; for an event that waits, what the
// replicas answer of a route they hold stopped.
func (x *teller) routeState(ctx context.Context, r dlq.Route, s *EventStory, letters []dlq.Letter) (EventRoute, error) {
	route, err := x.src.Route(r.Name)
	if err != nil {
		return EventRoute{}, err
	}
	er := EventRoute{Route: r.Name, Consumer: route.Durable}
	var mine []dlq.Letter
	for _, l := range letters {
		if l.Route == r.Name {
			mine = append(mine, l)
		}
	}
	c, err := x.src.JS.Consumer(ctx, r.Stream, route.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		er.State, er.Detail = StateUnknown, "its consumer does not exist (the worker creates it at start-up)"
		return er, nil
	}
	if err != nil {
		return er, fmt.Errorf("route %s: %w", r.Name, err)
	}
	ci := c.CachedInfo()
	er.Delivered, er.AckFloor = ci.Delivered.Stream, ci.AckFloor.Stream
	er.State, er.Detail = x.stateOf(s, ci, mine)
	if er.State == StatePending || er.State == StateDelivered {
		x.addStopped(ctx, route, &er)
	}
	if !s.InStream && s.Subject == "" {
		er.Detail += fmt.Sprintf(" (its subject is unknown: whether route %s's consumer captures it cannot be told)", r.Name)
	}
	return er, nil
}

// stateOf is the event's state and its detail from the consumer's info
// and the route's dead letters of it.
func (x *teller) stateOf(s *EventStory, ci *jetstream.ConsumerInfo, mine []dlq.Letter) (string, string) {
	switch {
	case len(mine) > 0 && len(s.Replays) > 0:
		return StateReplayed, fmt.Sprintf("dead-lettered (%s), and replayed as %s; its dead letter %d still waits", letterText(mine[0]), s.Replays[0].Ref, mine[0].Seq)
	case len(mine) > 0:
		return StateDeadLettered, fmt.Sprintf("%s; dead letter %d of %s, stored %s", letterText(mine[0]), mine[0].Seq, x.dlCfg.Stream, mine[0].Stored.UTC().Format(time.RFC3339))
	case len(s.Replays) > 0:
		return StateReplayed, fmt.Sprintf("dead-lettered, and the letter replayed as %s (see below)", s.Replays[0].Ref)
	case s.Stored != nil && ci.Config.DeliverPolicy == jetstream.DeliverNewPolicy && s.Stored.Before(ci.Created):
		return StateNeverSent, "stored before the consumer was created with deliver: new; it is never delivered"
	case s.Seq <= ci.AckFloor.Stream:
		return StateAccepted, "the API accepted it (202): it is at or below the consumer's ack floor (settled), and no dead letter of it waits (one since purged or expired would look the same)"
	case s.Seq <= ci.Delivered.Stream:
		return StateDelivered, fmt.Sprintf("delivered, not known to be settled: in flight, waiting out a retry delay, or already acked out of order above the ack floor (%d) — consumer info cannot tell these apart; the consumer has %d delivered and unsettled, %d of them redelivered",
			ci.AckFloor.Stream, ci.NumAckPending, ci.NumRedelivered)
	}
	detail := fmt.Sprintf("not yet delivered: the consumer has delivered up to sequence %d, %s pending", ci.Delivered.Stream, Count(ci.NumPending, "message", "messages"))
	if ci.Paused {
		detail += "; the consumer is paused"
	}
	return StatePending, detail
}

// addStopped asks the replicas about route (once per route) and, if any
// holds it stopped, says that the event waits behind that condition.
func (x *teller) addStopped(ctx context.Context, route Route, er *EventRoute) {
	answers, ok := x.status[route.Name]
	if !ok {
		wait := x.q.StatusWait
		if wait <= 0 {
			wait = DefaultStatusWait
		}
		g := x.src.AskReplicas(ctx, []Route{route}, AskOptions{Wait: wait})
		answers = g.Answers[route.Name]
		x.status[route.Name] = answers
	}
	for _, a := range answers {
		if a.Refused == "" && a.Status != nil && stopped(a.Status) {
			er.Stopped = append(er.Stopped, a)
		}
	}
	if len(er.Stopped) > 0 {
		er.Detail += "; it waits behind the route's condition: " + ConditionText(er.Stopped[0].Status) + " (on " + Count(len(er.Stopped), "replica", "replicas") + ")"
	}
}

// replays finds the replays of s's event in its work stream: messages on
// its subject after it whose replay headers name the event (or, written
// before they did, that are replays with its key). What the search read
// is not read again; the rest is read up to x.q.Scan messages.
func (x *teller) replays(ctx context.Context, st jetstream.Stream, s *EventStory) error {
	origin := s.Origin
	if origin == "" {
		origin = s.Ref
	}
	isReplay := func(r seenReplay) bool {
		return r.seq > s.Seq && r.subject == s.Subject &&
			((r.origin == origin && r.count > s.ReplayCount) || (r.origin == "" && s.Key != "" && r.key == s.Key))
	}
	var found []ref
	cov := x.seen[s.Stream]
	if cov == nil || cov.overflow {
		cov = &coverage{}
	}
	for _, r := range cov.replays {
		if isReplay(r) {
			found = append(found, ref{s.Stream, r.seq, r.subject})
		}
	}
	more, err := x.scanReplays(ctx, st, s, cov, isReplay)
	if err != nil {
		return err
	}
	found = append(found, more...)
	sortRefs(found)
	for _, r := range found {
		rs, err := x.story(ctx, r, false)
		if err != nil {
			return err
		}
		s.Replays = append(s.Replays, rs)
	}
	markReplayedAgain(s)
	return nil
}

// scanReplays reads the parts of the stream after s that the search did
// not, on s's subject, up to x.q.Scan messages, for replays of s.
func (x *teller) scanReplays(ctx context.Context, st jetstream.Stream, s *EventStory, cov *coverage, isReplay func(seenReplay) bool) ([]ref, error) {
	last := st.CachedInfo().State.LastSeq
	var found []ref
	budget := x.q.Scan
	for _, gap := range gaps(cov.ranges, s.Seq+1, last) {
		if budget <= 0 {
			s.CannotTell = append(s.CannotTell, fmt.Sprintf("whether it was replayed after the %s searched for replays (--scan for more)", Count(x.q.Scan, "message", "messages")))
			break
		}
		res, err := scanRange(ctx, st, s.Subject, gap, budget, func(r seenReplay) {
			if isReplay(r) {
				found = append(found, ref{s.Stream, r.seq, r.subject})
			}
		})
		if err != nil {
			return nil, err
		}
		budget -= res.Scanned
		if !res.Complete && budget <= 0 {
			s.CannotTell = append(s.CannotTell, fmt.Sprintf("whether it was replayed after the %s searched for replays (--scan for more)", Count(x.q.Scan, "message", "messages")))
			break
		}
	}
	return found, nil
}

// scanRange reads gap on subject, up to limit messages, and hands each
// replay in it to fn.
func scanRange(ctx context.Context, st jetstream.Stream, subject string, gap streamscan.Slice, limit int, fn func(seenReplay)) (streamscan.Result, error) {
	return streamscan.Scan(ctx, st, streamscan.Range{HeadersOnly: true, Subjects: []string{subject}, FromSeq: gap.From, ToSeq: gap.To, Limit: limit},
		func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			h := m.Headers()
			if h.Get(deadletter.HeaderReplayOf) == "" {
				return true, nil
			}
			count, _ := strconv.Atoi(h.Get(deadletter.HeaderReplayCount))
			// A replay carries its key, or its replay message id when
			// its letter had none usable: its headers give the key
			// the worker uses, whatever the route's contract.
			key, _ := event.IdempotencyKey(h, md)
			fn(seenReplay{seq: md.Sequence.Stream, subject: m.Subject(), origin: h.Get(deadletter.HeaderReplayOrigin), key: key, count: count})
			return true, nil
		})
}

// markReplayedAgain: a replay followed by another was dead-lettered and
// its letter replayed: acked (termed) and its letter gone, it would
// otherwise look accepted.
func markReplayedAgain(s *EventStory) {
	for i := 0; i+1 < len(s.Replays); i++ {
		next := s.Replays[i+1]
		for j, er := range s.Replays[i].Routes {
			if er.State == StateAccepted && next.ReplayCount > s.Replays[i].ReplayCount {
				s.Replays[i].Routes[j].State = StateReplayed
				s.Replays[i].Routes[j].Detail = fmt.Sprintf("dead-lettered again, and the letter replayed as %s", next.Ref)
			}
		}
	}
}

// gaps returns the parts of [from, to] that none of covered holds, in
// order.
func gaps(covered []streamscan.Slice, from, to uint64) []streamscan.Slice {
	var out []streamscan.Slice
	for from <= to && from != 0 {
		next := to + 1 // the start of the first range covering something at or after from
		end := uint64(0)
		for _, c := range covered {
			switch {
			case c.From <= from && c.To >= from:
				end = max(end, c.To)
			case c.From > from && c.From < next:
				next = c.From
			}
		}
		if end > 0 {
			from = end + 1
			continue
		}
		out = append(out, streamscan.Slice{From: from, To: next - 1})
		from = next
	}
	return out
}
