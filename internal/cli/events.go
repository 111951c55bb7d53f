package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/event"
)

// `agentrelay events show` answers "what happened to event X?" from what
// NATS holds: the work stream's message, each route consumer's position, the
// dead-letter stream and the replays in the work stream. It says plainly
// what those cannot tell.

// Event states, per route.
const (
	statePending      = "pending"       // not yet delivered
	stateDelivered    = "delivered"     // delivered, not known to be settled
	stateAccepted     = "accepted"      // acked: the API answered 202
	stateDeadLettered = "dead_lettered" // its dead letter waits in the dead-letter stream
	stateReplayed     = "replayed"      // dead-lettered, and the letter replayed
	stateNeverSent    = "never_delivered"
	stateUnknown      = "unknown"
)

// eventStory is what `events show` tells of one message.
type eventStory struct {
	Ref      string     `json:"ref"` // STREAM:SEQ
	Stream   string     `json:"stream"`
	Seq      uint64     `json:"seq"`
	InStream bool       `json:"in_stream"` // the stream still holds the message
	Subject  string     `json:"subject,omitempty"`
	Stored   *time.Time `json:"stored,omitempty"`
	MsgID    string     `json:"msg_id,omitempty"`
	Size     int        `json:"size,omitempty"`
	// Key is the Idempotency-Key as the worker computes it; KeyFrom says
	// from what, KeyProblem why it has none usable.
	Key        string `json:"idempotency_key,omitempty"`
	KeyFrom    string `json:"key_from,omitempty"`
	KeyProblem string `json:"key_problem,omitempty"`
	// A replay (dlq replay) names the dead letter it came from, where the
	// event was first published, and which replay it is.
	ReplayOf    string `json:"replay_of,omitempty"`
	Origin      string `json:"origin,omitempty"`
	ReplayCount int    `json:"replay_count,omitempty"`

	Routes      []eventRoute  `json:"routes"`
	DeadLetters []eventLetter `json:"dead_letters,omitempty"`
	// Replays of this event found in the work stream, each with its story
	// (without further replays: they are all listed here).
	Replays    []eventStory `json:"replays,omitempty"`
	CannotTell []string     `json:"cannot_tell,omitempty"`
}

// eventRoute is the event's state on one route.
type eventRoute struct {
	Route     string `json:"route"`
	Consumer  string `json:"consumer"`
	State     string `json:"state"`
	Detail    string `json:"detail"`
	Delivered uint64 `json:"consumer_delivered_seq"` // the consumer's last delivered stream sequence
	AckFloor  uint64 `json:"consumer_ack_floor_seq"` // every message up to it is settled
}

// eventLetter is a dead letter of the event.
type eventLetter struct {
	Seq      uint64    `json:"seq"`
	Stored   time.Time `json:"stored"`
	Route    string    `json:"route"`
	Reason   string    `json:"reason"`
	Status   int       `json:"status,omitempty"`
	Error    string    `json:"error,omitempty"`
	Attempts int       `json:"attempts"`
	Total    int       `json:"total_attempts"`
	Replays  int       `json:"replays"`
	Of       string    `json:"of"` // STREAM:SEQ of the message it is the letter of
}

func newEventsCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Tell what happened to an event",
	}
	cmd.AddCommand(newEventsShowCmd(e, g))
	return cmd
}

// defaultEventScan bounds every scan `events show` makes: the messages of a
// work stream searched for a message id, the dead letters searched, and
// the messages after the event searched for its replays.
const defaultEventScan = 10_000

func newEventsShowCmd(e *env, g *globalFlags) *cobra.Command {
	var asJSON bool
	var scan int
	cmd := &cobra.Command{
		Use:   "show MSG-ID | STREAM:SEQ",
		Short: "Tell an event's story: route, key, pending, in flight, accepted, dead-lettered, replayed",
		Long: `Tell what happened to one event, from what NATS holds: its stream and
sequence, the route whose consumer captures its subject, the Idempotency-Key
the worker uses for it, and its state on that route:

  pending          not yet delivered (beyond the consumer's delivered sequence)
  delivered        delivered but not known to be settled: in flight, waiting out
                   a retry delay, or settled out of order above the ack floor —
                   consumer info cannot tell these apart
  accepted         acked (the API answered 202), and no dead letter of it waits
  dead_lettered    its dead letter waits in the dead-letter stream (shown)
  replayed         dead-lettered, and the letter replayed (the replays are shown)

STREAM:SEQ names a message (WORK:42); anything else is a message id or an
Idempotency-Key, searched for in the last --scan messages of each route's
stream and the last --scan dead letters (JetStream cannot be asked for a
message by id). What cannot be known is said under "cannot tell".`,
		Example: `  agentrelay events show WORK:42
  agentrelay events show order-1234 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFlags(intIn("scan", scan, 1, maxLimit, "")); err != nil {
				return err
			}
			t, err := connectTool(cmd.Context(), e, g)
			if err != nil {
				return err
			}
			defer t.Close()
			x, err := newEventTeller(cmd.Context(), t, scan)
			if err != nil {
				return err
			}
			stories, notes, err := x.find(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, struct {
					Query  string       `json:"query"`
					Events []eventStory `json:"events"`
					Notes  []string     `json:"notes,omitempty"`
				}{args[0], stories, notes}, true)
			}
			for i, s := range stories {
				if i > 0 {
					printf(e.stdout, "\n")
				}
				printStory(e.stdout, s, "")
			}
			for _, n := range notes {
				printf(e.stdout, "%s\n", n)
			}
			if len(stories) == 0 {
				return errors.New("event not found")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&scan, "scan", defaultEventScan, "messages searched at most in each stream (for a message id, for dead letters, for replays)")
	return cmd
}

// eventTeller gathers the stories.
type eventTeller struct {
	t      *toolConn
	scan   int
	routes []dlq.Route
	dl     *dlq.Store // nil when there is no dead-letter stream yet
	dlCfg  deadletter.Config
}

func newEventTeller(ctx context.Context, t *toolConn, scan int) (*eventTeller, error) {
	p, err := replayPolicy(ctx, t, false)
	if err != nil {
		return nil, err
	}
	x := &eventTeller{t: t, scan: scan, routes: p.Routes, dlCfg: app.DeadLetter(t.cfg.DeadLetter).WithDefaults()}
	x.dl, err = dlq.Open(ctx, t.js, x.dlCfg)
	if err != nil && !errors.Is(err, dlq.ErrNoStream) {
		return nil, err
	}
	return x, nil
}

// streams are the work streams of the routes, each once.
func (x *eventTeller) streams() []string {
	var out []string
	for _, r := range x.routes {
		if !slices.Contains(out, r.Stream) {
			out = append(out, r.Stream)
		}
	}
	return out
}

// parseRef reads STREAM:SEQ for a stream of the configuration.
func (x *eventTeller) parseRef(arg string) (string, uint64, bool) {
	i := strings.LastIndexByte(arg, ':')
	if i <= 0 || !slices.Contains(x.streams(), arg[:i]) {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(arg[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return "", 0, false
	}
	return arg[:i], seq, true
}

// find resolves the argument to messages and tells their stories, with
// notes on what the search covered.
func (x *eventTeller) find(ctx context.Context, arg string) ([]eventStory, []string, error) {
	if stream, seq, ok := x.parseRef(arg); ok {
		s, err := x.story(ctx, ref{stream: stream, seq: seq}, true)
		if err != nil {
			return nil, nil, err
		}
		return []eventStory{s}, nil, nil
	}
	refs, notes, err := x.search(ctx, arg)
	if err != nil {
		return nil, nil, err
	}
	var stories []eventStory
	for _, r := range refs {
		s, err := x.story(ctx, r, true)
		if err != nil {
			return nil, nil, err
		}
		stories = append(stories, s)
	}
	return stories, notes, nil
}

// ref names a message; subject, when known, is its subject (a hint for a
// message its stream no longer holds).
type ref struct {
	stream  string
	seq     uint64
	subject string
}

// maxSearchHits bounds the messages a search tells the story of.
const maxSearchHits = 20

// search finds the messages whose message id or Idempotency-Key is id, in
// the last x.scan messages of each work stream, and the messages whose
// dead letters carry it, in the last x.scan dead letters. The replays of
// an event share its key: only the first message of each event is kept
// (its story lists the replays).
func (x *eventTeller) search(ctx context.Context, id string) ([]ref, []string, error) {
	var refs []ref
	var notes []string
	add := func(r ref) {
		same := func(o ref) bool { return o.stream == r.stream && o.seq == r.seq }
		if !slices.ContainsFunc(refs, same) && len(refs) < maxSearchHits {
			refs = append(refs, r)
		}
	}
	for _, name := range x.streams() {
		st, err := x.t.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			notes = append(notes, fmt.Sprintf("stream %s does not exist", name))
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		state := st.CachedInfo().State
		if state.Msgs == 0 {
			continue
		}
		from := state.FirstSeq
		if state.LastSeq-state.FirstSeq >= uint64(x.scan) {
			from = state.LastSeq - uint64(x.scan) + 1
			notes = append(notes, fmt.Sprintf("searched %s from sequence %d to %d (the last %d; --scan for more); older messages were not searched", name, from, state.LastSeq, x.scan))
		}
		err = scanStream(ctx, st, jetstream.OrderedConsumerConfig{HeadersOnly: true, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}, x.scan,
			func(m jetstream.Msg, md *jetstream.MsgMetadata) bool {
				h := m.Headers()
				key, _ := event.IdempotencyKey(h, md)
				if h.Get(jetstream.MsgIDHeader) == id || key == id {
					// A replay's story is its event's: told from the
					// message first published, which lists the replays.
					r := ref{name, md.Sequence.Stream, m.Subject()}
					if o, seq := deadletter.ParseOrigin(h.Get(deadletter.HeaderReplayOrigin)); o != "" {
						r = ref{o, seq, m.Subject()}
					}
					add(r)
				}
				return true
			})
		if err != nil {
			return nil, nil, err
		}
	}
	if x.dl != nil {
		info, err := x.dl.Info(ctx)
		if err != nil {
			return nil, nil, err
		}
		if s := info.State; s.Msgs > 0 {
			f := dlq.Filter{FromSeq: s.FirstSeq, MaxSeq: s.LastSeq}
			if s.LastSeq-s.FirstSeq >= uint64(x.scan) {
				f.FromSeq = s.LastSeq - uint64(x.scan) + 1
				notes = append(notes, fmt.Sprintf("searched dead letters %d to %d of %s (the last %d; --scan for more)", f.FromSeq, s.LastSeq, x.dl.Name(), x.scan))
			}
			err := x.dl.Scan(ctx, f, true, func(l dlq.Letter) (bool, error) {
				if l.IdempotencyKey == id || l.OriginalMsgID() == id {
					st, seq := l.Origin()
					add(ref{st, seq, l.OrigSubject})
				}
				return true, nil
			})
			if err != nil {
				return nil, nil, err
			}
		}
	}
	if len(refs) == 0 {
		notes = append(notes, fmt.Sprintf("no message with message id or Idempotency-Key %q in what was searched. JetStream keeps message ids only to deduplicate (for the stream's duplicate window) and cannot be asked for a message by id; a message removed from its stream (acked on a work-queue stream, expired, purged) is found only through its dead letter, if it has one", id))
	}
	slices.SortFunc(refs, func(a, b ref) int {
		return cmp.Or(strings.Compare(a.stream, b.stream), cmp.Compare(a.seq, b.seq))
	})
	return refs, notes, nil
}

// scanStream reads st through an ordered consumer (no acks, nothing left on
// the server), calling fn for at most limit messages, until fn returns
// false or the stream's end.
func scanStream(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, limit int, fn func(jetstream.Msg, *jetstream.MsgMetadata) bool) error {
	cfg.InactiveThreshold = time.Minute
	c, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	if c.CachedInfo().NumPending == 0 {
		return nil
	}
	seen := 0
	for seen < limit {
		batch, err := c.Fetch(min(256, limit-seen), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			seen++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if !fn(m, md) || md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if got == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// story tells what happened to message r. withReplays also looks for the
// event's replays in the work stream.
func (x *eventTeller) story(ctx context.Context, r ref, withReplays bool) (eventStory, error) {
	stream, seq := r.stream, r.seq
	s := eventStory{Ref: fmt.Sprintf("%s:%d", stream, seq), Stream: stream, Seq: seq, Routes: []eventRoute{}}
	st, err := x.t.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return s, fmt.Errorf("stream %s does not exist", stream)
	}
	if err != nil {
		return s, err
	}
	info := st.CachedInfo()
	if seq > info.State.LastSeq {
		return s, fmt.Errorf("stream %s has no message %d yet (its last sequence is %d)", stream, seq, info.State.LastSeq)
	}
	var h nats.Header
	m, err := st.GetMsg(ctx, seq)
	switch {
	case err == nil:
		s.InStream, s.Subject, h = true, m.Subject, m.Header
		stored := m.Time.UTC()
		s.Stored, s.Size = &stored, len(m.Data)
		s.MsgID = h.Get(jetstream.MsgIDHeader)
		md := &jetstream.MsgMetadata{Stream: stream, Sequence: jetstream.SequencePair{Stream: seq}, Timestamp: m.Time}
		s.Key, err = event.IdempotencyKey(h, md)
		switch {
		case err != nil:
			s.KeyProblem = err.Error() + ": the worker dead-letters it as invalid_idempotency_key"
		case h.Get(event.HeaderIdempotencyKey) != "":
			s.KeyFrom = "its Idempotency-Key header"
		case s.MsgID != "":
			s.KeyFrom = "its Nats-Msg-Id"
		default:
			s.KeyFrom = "derived from stream, sequence and stored time (no message id)"
		}
		s.ReplayOf = h.Get(deadletter.HeaderReplayOf)
		s.Origin = h.Get(deadletter.HeaderReplayOrigin)
		s.ReplayCount, _ = strconv.Atoi(h.Get(deadletter.HeaderReplayCount))
	case isNotFound(err):
		s.CannotTell = append(s.CannotTell, goneText(info))
	default:
		return s, err
	}

	letters, err := x.letters(ctx, &s)
	if err != nil {
		return s, err
	}
	if !s.InStream && len(letters) > 0 {
		// The dead letter holds what the stream no longer does.
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

	for _, rt := range x.routes {
		if rt.Stream != stream {
			continue
		}
		if s.Subject != "" && !rt.Consumes(s.Subject) {
			continue
		}
		er, err := x.routeState(ctx, rt, &s, letters)
		if err != nil {
			return s, err
		}
		s.Routes = append(s.Routes, er)
	}
	if len(s.Routes) == 0 {
		s.CannotTell = append(s.CannotTell, fmt.Sprintf("no configured route consumes %s: agentrelay does not deliver it", orUnknown(s.Subject)))
	}
	if withReplays && len(s.DeadLetters) == 0 {
		s.CannotTell = append(s.CannotTell,
			"how often it was delivered: consumer info counts redeliveries for the whole consumer only (a dead letter records its attempts)")
	}
	return s, nil
}

func orUnknown(subject string) string {
	if subject == "" {
		return "its subject (unknown)"
	}
	return subject
}

func isNotFound(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrMsgNotFound) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound)
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
// maps to when known, at most x.scan of them.
func (x *eventTeller) letters(ctx context.Context, s *eventStory) ([]dlq.Letter, error) {
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
		return n < x.scan, nil
	})
	if n >= x.scan {
		s.CannotTell = append(s.CannotTell, fmt.Sprintf("whether a dead letter of it lies beyond the %d dead letters searched (--scan for more)", x.scan))
	}
	for _, l := range out {
		s.DeadLetters = append(s.DeadLetters, eventLetter{
			Seq: l.Seq, Stored: l.Stored.UTC(), Route: l.Route, Reason: l.Reason, Status: l.Status, Error: l.Error,
			Attempts: l.Attempts, Total: l.TotalAttempts(), Replays: l.Replays, Of: s.Ref,
		})
	}
	return out, err
}

// replays finds the replays of s's event in its work stream: messages on
// its subject after it whose replay headers name the event (or, written
// before they did, that are replays with its key), at most x.scan
// messages.
func (x *eventTeller) replays(ctx context.Context, st jetstream.Stream, s *eventStory) error {
	origin := s.Origin
	if origin == "" {
		origin = s.Ref
	}
	var found []ref
	n := 0
	err := scanStream(ctx, st, jetstream.OrderedConsumerConfig{
		HeadersOnly: true, FilterSubjects: []string{s.Subject},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: s.Seq + 1,
	}, x.scan, func(m jetstream.Msg, md *jetstream.MsgMetadata) bool {
		n++
		h := m.Headers()
		if h.Get(deadletter.HeaderReplayOf) == "" {
			return true
		}
		o := h.Get(deadletter.HeaderReplayOrigin)
		count, _ := strconv.Atoi(h.Get(deadletter.HeaderReplayCount))
		key, _ := event.IdempotencyKey(h, md)
		if (o == origin && count > s.ReplayCount) || (o == "" && s.Key != "" && key == s.Key) {
			found = append(found, ref{s.Stream, md.Sequence.Stream, m.Subject()})
		}
		return true
	})
	if err != nil {
		return err
	}
	if n >= x.scan {
		s.CannotTell = append(s.CannotTell, fmt.Sprintf("whether it was replayed after the %d messages searched (--scan for more)", x.scan))
	}
	for _, r := range found {
		rs, err := x.story(ctx, r, false)
		if err != nil {
			return err
		}
		s.Replays = append(s.Replays, rs)
	}
	// A replay followed by another was dead-lettered and its letter
	// replayed: acked (termed) and its letter gone, it would otherwise
	// look accepted.
	for i := 0; i+1 < len(s.Replays); i++ {
		next := s.Replays[i+1]
		for j, er := range s.Replays[i].Routes {
			if er.State == stateAccepted && next.ReplayCount > s.Replays[i].ReplayCount {
				s.Replays[i].Routes[j].State = stateReplayed
				s.Replays[i].Routes[j].Detail = fmt.Sprintf("dead-lettered again, and the letter replayed as %s", next.Ref)
			}
		}
	}
	return nil
}

// routeState is the event's state on route r, from its consumer's info and
// the dead letters and replays found.
func (x *eventTeller) routeState(ctx context.Context, r dlq.Route, s *eventStory, letters []dlq.Letter) (eventRoute, error) {
	var durable string
	for _, rc := range x.t.cfg.Routes {
		if rc.Name == r.Name {
			durable = app.Route(rc, nil).WithDefaults().Durable // the file may leave it to its default
		}
	}
	er := eventRoute{Route: r.Name, Consumer: durable}
	var mine []dlq.Letter
	for _, l := range letters {
		if l.Route == r.Name {
			mine = append(mine, l)
		}
	}
	c, err := x.t.js.Consumer(ctx, r.Stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		er.State, er.Detail = stateUnknown, "its consumer does not exist (the worker creates it at start-up)"
		return er, nil
	}
	if err != nil {
		return er, fmt.Errorf("route %s: %w", r.Name, err)
	}
	ci := c.CachedInfo()
	er.Delivered, er.AckFloor = ci.Delivered.Stream, ci.AckFloor.Stream
	switch {
	case len(mine) > 0 && len(s.Replays) > 0:
		er.State, er.Detail = stateReplayed, fmt.Sprintf("dead-lettered (%s), and replayed as %s; its dead letter %d still waits", letterText(mine[0]), s.Replays[0].Ref, mine[0].Seq)
	case len(mine) > 0:
		er.State, er.Detail = stateDeadLettered, fmt.Sprintf("%s; dead letter %d of %s, stored %s", letterText(mine[0]), mine[0].Seq, x.dlCfg.Stream, mine[0].Stored.UTC().Format(time.RFC3339))
	case len(s.Replays) > 0:
		er.State, er.Detail = stateReplayed, fmt.Sprintf("dead-lettered, and the letter replayed as %s (see below)", s.Replays[0].Ref)
	case s.Stored != nil && ci.Config.DeliverPolicy == jetstream.DeliverNewPolicy && s.Stored.Before(ci.Created):
		er.State, er.Detail = stateNeverSent, "stored before the consumer was created with deliver: new; it is never delivered"
	case s.Seq <= ci.AckFloor.Stream:
		er.State, er.Detail = stateAccepted, "the API accepted it (202): it is at or below the consumer's ack floor (settled), and no dead letter of it waits (one since purged or expired would look the same)"
	case s.Seq <= ci.Delivered.Stream:
		er.State = stateDelivered
		er.Detail = fmt.Sprintf("delivered, not known to be settled: in flight, waiting out a retry delay, or already acked out of order above the ack floor (%d) — consumer info cannot tell these apart; the consumer has %d delivered and unsettled, %d of them redelivered",
			ci.AckFloor.Stream, ci.NumAckPending, ci.NumRedelivered)
	default:
		er.State = statePending
		er.Detail = fmt.Sprintf("not yet delivered: the consumer has delivered up to sequence %d, %d %s pending", ci.Delivered.Stream, ci.NumPending, plural(int(ci.NumPending), "message", "messages"))
		if ci.Paused {
			er.Detail += "; the consumer is paused"
		}
	}
	if !s.InStream && s.Subject == "" {
		er.Detail += fmt.Sprintf(" (its subject is unknown: whether route %s's consumer captures it cannot be told)", r.Name)
	}
	return er, nil
}

// letterText is a dead letter's why: reason, status, attempts, replays.
func letterText(l dlq.Letter) string {
	b := l.Reason
	if l.Status != 0 {
		b += fmt.Sprintf(" (%d)", l.Status)
	}
	b += fmt.Sprintf(" after %d %s", l.Attempts, plural(l.Attempts, "attempt", "attempts"))
	if l.Replays > 0 {
		b += fmt.Sprintf(", %d over %d replays", l.TotalAttempts(), l.Replays)
	}
	return b
}

// printStory prints s as text, indented by indent.
func printStory(w io.Writer, s eventStory, indent string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { printf(tw, "%s%s\t%s\n", indent, k, v) }
	row("event", s.Ref)
	if s.Subject != "" {
		row("subject", s.Subject)
	}
	if s.Stored != nil {
		row("stored", s.Stored.Format(time.RFC3339Nano))
	}
	if s.MsgID != "" {
		row("message id", s.MsgID)
	}
	switch {
	case s.KeyProblem != "":
		row("idempotency key", "none usable: "+s.KeyProblem)
	case s.Key != "":
		row("idempotency key", s.Key+" ("+s.KeyFrom+")")
	}
	if s.ReplayOf != "" {
		row("replay", fmt.Sprintf("replay %d of the event first published as %s (of dead letter %s)", s.ReplayCount, s.Origin, s.ReplayOf))
	}
	for _, r := range s.Routes {
		row("route "+r.Route, r.State+": "+r.Detail)
	}
	for _, l := range s.DeadLetters {
		row("dead letter", fmt.Sprintf("%d: %s, %s; %s (dlq show %d)", l.Seq, l.Route, l.Stored.Format(time.RFC3339), l.Error, l.Seq))
	}
	_ = tw.Flush()
	for _, r := range s.Replays {
		printf(w, "%sreplayed as:\n", indent)
		printStory(w, r, indent+"  ")
	}
	if len(s.CannotTell) > 0 {
		printf(w, "%scannot tell:\n", indent)
		for _, c := range s.CannotTell {
			printf(w, "%s  - %s\n", indent, c)
		}
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
