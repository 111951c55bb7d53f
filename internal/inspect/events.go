package inspect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/dlq"
)

// Event states, per route.
const (
	StatePending      = "pending"       // not yet delivered
	StateDelivered    = "delivered"     // delivered, not known to be settled
	StateAccepted     = "accepted"      // acked: the API answered 202
	StateDeadLettered = "dead_lettered" // its dead letter waits in the dead-letter stream
	StateReplayed     = "replayed"      // dead-lettered, and the letter replayed
	StateNeverSent    = "never_delivered"
	StateUnknown      = "unknown"
)

// EventStory is what is known of one message.
type EventStory struct {
	Ref      string     `json:"ref"` // STREAM:SEQ
	Stream   string     `json:"stream"`
	Seq      uint64     `json:"seq"`
	InStream bool       `json:"in_stream"` // the stream still holds the message
	Subject  string     `json:"subject,omitempty"`
	Stored   *time.Time `json:"stored,omitempty"`
	MsgID    string     `json:"msg_id,omitempty"`
	Size     int        `json:"size,omitempty"`
	// Key is the Idempotency-Key as the worker computes it (on the first
	// route that consumes the event, see EventRoute.Key); KeyFrom says
	// from what, KeyProblem why it has none usable.
	Key        string `json:"idempotency_key,omitempty"`
	KeyFrom    string `json:"key_from,omitempty"`
	KeyProblem string `json:"key_problem,omitempty"`
	// A replay (dlq replay) names the dead letter it came from, where the
	// event was first published, and which replay it is.
	ReplayOf    string `json:"replay_of,omitempty"`
	Origin      string `json:"origin,omitempty"`
	ReplayCount int    `json:"replay_count,omitempty"`

	Routes      []EventRoute  `json:"routes"`
	DeadLetters []EventLetter `json:"dead_letters,omitempty"`
	// Replays of this event found in the work stream, each with its story
	// (without further replays: they are all listed here).
	Replays    []EventStory `json:"replays,omitempty"`
	CannotTell []string     `json:"cannot_tell,omitempty"`
}

// EventRoute is the event's state on one route.
type EventRoute struct {
	Route     string `json:"route"`
	Consumer  string `json:"consumer"`
	State     string `json:"state"`
	Detail    string `json:"detail"`
	Delivered uint64 `json:"consumer_delivered_seq"` // the consumer's last delivered stream sequence
	AckFloor  uint64 `json:"consumer_ack_floor_seq"` // every message up to it is settled
	// Stopped, for an event that waits (pending or delivered), is what
	// the replicas answered of a route they hold stopped: the event waits
	// behind that condition.
	Stopped []ReplicaAnswer `json:"route_stopped,omitempty"`
	// Key, KeyFrom and KeyProblem are the event's Idempotency-Key on this
	// route when its contract keys it otherwise than the event's Key says
	// (a CloudEvents route beside a JSON route on one subject); empty
	// when it is the same.
	Key        string `json:"idempotency_key,omitempty"`
	KeyFrom    string `json:"key_from,omitempty"`
	KeyProblem string `json:"key_problem,omitempty"`
}

// EventLetter is a dead letter of the event.
type EventLetter struct {
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

// EventQuery is what Events looks for and how far.
type EventQuery struct {
	// Arg is STREAM:SEQ, or a message id or Idempotency-Key to search for.
	Arg string
	// Since and Until, when set, narrow the search to the messages stored
	// in [Since, Until): the scan starts by time, so a recent event is
	// found at once at any stream size.
	Since, Until time.Time
	// Deadline, when set, ends the search (not the story): what was found
	// by then is told, and the report says how far the search looked.
	Deadline time.Time
	// Scan bounds the other reads of a story: the dead letters searched
	// for an event's letters, and the messages after it searched for its
	// replays (beyond those the search already read). Zero: DefaultScan.
	Scan int
	// Progress, when set, is called during long searches (see Progress).
	Progress func(Progress)
	// StatusWait bounds how long the replicas are asked about a route an
	// event waits on (zero: DefaultStatusWait).
	StatusWait time.Duration
}

// DefaultScan is EventQuery.Scan's default.
const DefaultScan = 10_000

// EventReport is what Events found.
type EventReport struct {
	Query  string       `json:"query"`
	Events []EventStory `json:"events"`
	// Searched says which messages of each stream a search read.
	Searched []Searched `json:"searched,omitempty"`
	Notes    []string   `json:"notes,omitempty"`
}

// ErrNoMessage is returned for a STREAM:SEQ the stream has not reached.
var ErrNoMessage = errors.New("no such message")

// Events resolves q.Arg to messages and tells their stories.
func (s *Source) Events(ctx context.Context, q EventQuery) (*EventReport, error) {
	if q.Scan <= 0 {
		q.Scan = DefaultScan
	}
	x, err := s.newTeller(ctx, q)
	if err != nil {
		return nil, err
	}
	rep := &EventReport{Query: q.Arg, Events: []EventStory{}}
	var refs []ref
	if stream, seq, ok := x.parseRef(q.Arg); ok {
		refs = []ref{{stream: stream, seq: seq}}
	} else {
		sr, err := x.search(ctx, q)
		if err != nil {
			return nil, err
		}
		refs, rep.Searched, rep.Notes = sr.refs, sr.searched, sr.notes
	}
	for _, r := range refs {
		st, err := x.story(ctx, r, true)
		if err != nil {
			return nil, err
		}
		rep.Events = append(rep.Events, st)
	}
	return rep, nil
}

// teller gathers the stories.
type teller struct {
	src    *Source
	q      EventQuery
	routes []dlq.Route
	dl     *dlq.Store // nil when there is no dead-letter stream yet
	dlCfg  deadletter.Config
	// seen is what the search read of each work stream: the ranges, and
	// the replays in them, so that a story need not read them again.
	seen map[string]*coverage
	// status caches the replicas' answers per route.
	status map[string][]ReplicaAnswer
}

func (s *Source) newTeller(ctx context.Context, q EventQuery) (*teller, error) {
	p, err := s.ReplayPolicy(ctx, false)
	if err != nil {
		return nil, err
	}
	x := &teller{src: s, q: q, routes: p.Routes, dlCfg: s.DeadLetterConfig(), seen: map[string]*coverage{}, status: map[string][]ReplicaAnswer{}}
	x.dl, err = dlq.Open(ctx, s.JS, x.dlCfg)
	if err != nil && !errors.Is(err, dlq.ErrNoStream) {
		return nil, err
	}
	return x, nil
}

// streams are the work streams of the routes, each once.
func (x *teller) streams() []string {
	var out []string
	for _, r := range x.routes {
		if !slices.Contains(out, r.Stream) {
			out = append(out, r.Stream)
		}
	}
	return out
}

// parseRef reads STREAM:SEQ for a stream of the configuration.
func (x *teller) parseRef(arg string) (string, uint64, bool) {
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

// ref names a message; subject, when known, is its subject (a hint for a
// message its stream no longer holds).
type ref struct {
	stream  string
	seq     uint64
	subject string
}

func sortRefs(refs []ref) {
	slices.SortFunc(refs, func(a, b ref) int {
		return cmp.Or(strings.Compare(a.stream, b.stream), cmp.Compare(a.seq, b.seq))
	})
}

// letterText is a dead letter's why: reason, status, attempts, replays.
func letterText(l dlq.Letter) string {
	b := l.Reason
	if l.Status != 0 {
		b += fmt.Sprintf(" (%d)", l.Status)
	}
	b += " after " + Count(l.Attempts, "attempt", "attempts")
	if l.Replays > 0 {
		b += fmt.Sprintf(", %d over %s", l.TotalAttempts(), Count(l.Replays, "replay", "replays"))
	}
	return b
}
