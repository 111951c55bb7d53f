package inspect

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/routestatus"
	"github.com/agentrelay/agentrelay/internal/subject"
)

// RouteStatus is one route as `agentrelay status` shows it: its consumer
// as the server has it, its dead letters, and what each replica answered.
type RouteStatus struct {
	Route       string     `json:"route"`
	Stream      string     `json:"stream"`
	Consumer    string     `json:"consumer"`
	Problem     string     `json:"problem,omitempty"`
	Pending     uint64     `json:"pending"`
	AckPending  int        `json:"ack_pending"`
	Redelivered int        `json:"redelivered"`
	Waiting     int        `json:"waiting_pulls"`
	Paused      bool       `json:"paused"`
	PauseUntil  *time.Time `json:"pause_until,omitempty"`
	// PausedBy says whose pause the consumer's is, by its deadline:
	// "route_health" (a replica stopped the route for a route-wide
	// condition and is probing) or "operator".
	PausedBy string `json:"paused_by,omitempty"`
	// Ordering is "conversation_key" for an ordered route; Owner the id
	// the server pinned the route to (the replica that owns it), "" when
	// none is pinned.
	Ordering string `json:"ordering,omitempty"`
	Owner    string `json:"owner,omitempty"`
	// OwnerHolds is what the owner answered it holds: its blocked keys,
	// the longest waiting first. Nil when it did not answer; OwnerUnanswered
	// says why.
	OwnerHolds      *routestatus.Ordered `json:"owner_holds,omitempty"`
	OwnerUnanswered string               `json:"owner_unanswered,omitempty"`
	// Replicas are the replicas' answers (see AskReplicas); Silent the
	// replicas that serve the route and did not answer in time;
	// Unanswered says why there are no answers at all.
	Replicas    []ReplicaAnswer `json:"replicas"`
	Silent      []string        `json:"silent_replicas,omitempty"`
	Unanswered  string          `json:"unanswered,omitempty"`
	DeadLetters map[string]int  `json:"dead_letters"`
}

// UncapturedStream is a stream that routes read, with the subjects that
// hold messages no route's filter captures: messages that will never
// trigger an agent (a producer's typo, a route not deployed).
type UncapturedStream struct {
	Stream   string         `json:"stream"`
	Subjects []SubjectCount `json:"subjects"` // most messages first
	Messages uint64         `json:"messages"` // on those subjects
	// SubjectsInStream is how many subjects hold messages in the stream.
	// Capped: more than status reads (MaxStatusSubjects), so Subjects is
	// empty and the stream was not checked.
	SubjectsInStream uint64 `json:"subjects_in_stream"`
	Capped           bool   `json:"capped,omitempty"`
}

// SubjectCount is a subject and its messages.
type SubjectCount struct {
	Subject  string `json:"subject"`
	Messages uint64 `json:"messages"`
}

// MaxStatusSubjects bounds the per-subject counts status reads from one
// stream to find subjects no route captures: the answer costs memory and
// time in the server and here, at every --watch refresh. A stream with
// more subjects is reported as not checked.
const MaxStatusSubjects = 10_000

// StatusReport is `agentrelay status`.
type StatusReport struct {
	Time   time.Time     `json:"time"`
	Routes []RouteStatus `json:"routes"`
	// Uncaptured lists the streams with messages no route will deliver
	// (empty when there are none).
	Uncaptured []UncapturedStream `json:"uncaptured"`
	DeadLetter DeadLetterSummary  `json:"dead_letter_stream"`
	// AskedFor is how long the replicas' answers took.
	AskedFor time.Duration `json:"replicas_asked_ns"`
}

// DeadLetterSummary is the dead-letter stream at a glance.
type DeadLetterSummary struct {
	Stream   string         `json:"stream"`
	Exists   bool           `json:"exists"`
	Messages uint64         `json:"messages"`
	Bytes    uint64         `json:"bytes"`
	Other    map[string]int `json:"other_routes,omitempty"` // dead letters of routes not in the configuration
}

// StatusOptions are what Status reads.
type StatusOptions struct {
	// CountDeadLetters counts the dead letters by route and reason (a scan
	// of the dead-letter stream's headers).
	CountDeadLetters bool
	// BlockedKeys is how many blocked keys of an ordered route to ask for
	// (zero: routestatus.DefaultKeys).
	BlockedKeys int
	// Wait bounds the wait for the replicas' answers (zero:
	// DefaultStatusWait).
	Wait time.Duration
}

// Status reads every route's status.
func (s *Source) Status(ctx context.Context, o StatusOptions) (*StatusReport, error) {
	rep := &StatusReport{Time: time.Now().UTC()}
	counts, err := s.deadLetterSummary(ctx, o.CountDeadLetters, &rep.DeadLetter)
	if err != nil {
		return nil, err
	}
	routes := s.Routes()
	asked := make(chan *Gathered, 1)
	go func() { asked <- s.AskReplicas(ctx, routes, AskOptions{Wait: o.Wait, MaxKeys: o.BlockedKeys}) }()
	// Each stream's routes' filters, as their consumers have them when they
	// exist (an operator may have changed them), else as configured; nil
	// for a route that takes the whole stream.
	var streams []string
	filters := map[string][][]string{}
	for _, r := range routes {
		if _, seen := filters[r.Stream]; !seen {
			streams = append(streams, r.Stream)
		}
		rs, filter, err := s.consumerStatus(ctx, r)
		if err != nil {
			<-asked
			return nil, err
		}
		rs.DeadLetters = counts[r.Name]
		if rs.DeadLetters == nil {
			rs.DeadLetters = map[string]int{}
		}
		filters[r.Stream] = append(filters[r.Stream], filter)
		rep.Routes = append(rep.Routes, rs)
	}
	g := <-asked
	rep.AskedFor = g.Took
	for i := range rep.Routes {
		addAnswers(&rep.Routes[i], g)
	}
	if rep.Uncaptured, err = s.uncapturedAll(ctx, streams, filters); err != nil {
		return nil, err
	}
	rep.DeadLetter.Other = otherRoutes(counts, routes)
	return rep, nil
}

// deadLetterSummary fills d and returns the dead letters by route and
// reason (when count).
func (s *Source) deadLetterSummary(ctx context.Context, count bool, d *DeadLetterSummary) (dlq.Counts, error) {
	dlCfg := s.DeadLetterConfig()
	d.Stream = dlCfg.Stream
	store, err := dlq.Open(ctx, s.JS, dlCfg)
	switch {
	case errors.Is(err, dlq.ErrNoStream):
		return dlq.Counts{}, nil
	case err != nil:
		return nil, err
	}
	d.Exists = true
	info, err := store.Info(ctx)
	if err != nil {
		return nil, err
	}
	d.Messages, d.Bytes = info.State.Msgs, info.State.Bytes
	if !count || info.State.Msgs == 0 {
		return dlq.Counts{}, nil
	}
	return store.Count(ctx, dlq.Filter{})
}

// consumerStatus reads route r's consumer, and returns the subjects it
// captures.
func (s *Source) consumerStatus(ctx context.Context, r Route) (RouteStatus, []string, error) {
	rs := RouteStatus{Route: r.Name, Stream: r.Stream, Consumer: r.Durable, Replicas: []ReplicaAnswer{}}
	if r.Ordering == OrderByConversationKey {
		rs.Ordering = r.Ordering
	}
	c, err := s.JS.Consumer(ctx, r.Stream, r.Durable)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		rs.Problem = "stream does not exist"
		return rs, r.Subjects, nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		rs.Problem = "consumer does not exist (the worker creates it at start-up)"
		return rs, r.Subjects, nil
	case err != nil:
		return rs, nil, fmt.Errorf("route %s: %w", r.Name, err)
	}
	info := c.CachedInfo()
	rs.Pending, rs.AckPending, rs.Redelivered, rs.Waiting = info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting
	rs.Paused = info.Paused
	for _, g := range info.PriorityGroups {
		rs.Owner = g.PinnedClientID
	}
	if info.Paused {
		until := info.TimeStamp.Add(info.PauseRemaining).UTC()
		rs.PauseUntil = &until
		rs.PausedBy = routestatus.PausedByOperator
		if info.Config.PauseUntil != nil && routestatus.IsHealthPause(*info.Config.PauseUntil) {
			rs.PausedBy = routestatus.PausedByRouteHealth
		}
	}
	filter := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filter = []string{info.Config.FilterSubject}
	}
	return rs, filter, nil
}

// addAnswers adds the replicas' answers to rs, and for an ordered route
// what its owner (the replica whose pin the server holds) holds.
func addAnswers(rs *RouteStatus, g *Gathered) {
	rs.Replicas = append(rs.Replicas, g.Answers[rs.Route]...)
	rs.Silent = g.Silent[rs.Route]
	if len(rs.Replicas) == 0 {
		rs.Unanswered = fmt.Sprintf("no replica answered on %s within the wait (no worker runs, the workers are older than this command, or NATS permissions)", statusSubjectOf(rs))
	}
	if rs.Ordering == "" || rs.Owner == "" {
		return
	}
	for _, a := range rs.Replicas {
		if a.Status != nil && a.Status.Ordered != nil && a.Status.Ordered.PinID == rs.Owner {
			rs.OwnerHolds = a.Status.Ordered
			return
		}
	}
	rs.OwnerUnanswered = "the owner did not answer: " + Count(len(rs.Replicas), "replica", "replicas") + " answered, none holding pin " + rs.Owner
	if len(rs.Replicas) == 0 {
		rs.OwnerUnanswered = "the owner did not answer: " + rs.Unanswered
	}
}

func statusSubjectOf(rs *RouteStatus) string {
	return routestatus.Subject(rs.Stream, rs.Consumer)
}

func otherRoutes(counts dlq.Counts, routes []Route) map[string]int {
	known := map[string]bool{}
	for _, r := range routes {
		known[r.Name] = true
	}
	var other map[string]int
	for route, byReason := range counts {
		if known[route] {
			continue
		}
		if other == nil {
			other = map[string]int{}
		}
		for _, n := range byReason {
			other[route] += n
		}
	}
	return other
}

func (s *Source) uncapturedAll(ctx context.Context, streams []string, filters map[string][][]string) ([]UncapturedStream, error) {
	out := []UncapturedStream{}
	for _, name := range streams {
		u, err := Uncaptured(ctx, s.JS, name, filters[name], MaxStatusSubjects)
		if err != nil {
			return nil, err
		}
		if u != nil {
			out = append(out, *u)
		}
	}
	return out, nil
}

// Uncaptured reads the per-subject message counts of stream and returns
// the subjects that none of filters captures (a nil filter captures every
// subject), or nil when there are none. A missing stream is nil too: the
// routes' rows report it.
func Uncaptured(ctx context.Context, js jetstream.JetStream, stream string, filters [][]string, maxSubjects uint64) (*UncapturedStream, error) {
	for _, f := range filters {
		if len(f) == 0 {
			return nil, nil
		}
	}
	st, err := js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	n := st.CachedInfo().State.NumSubjects
	if n == 0 {
		return nil, nil
	}
	if n > maxSubjects {
		return &UncapturedStream{Stream: stream, Subjects: []SubjectCount{}, SubjectsInStream: n, Capped: true}, nil
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return nil, fmt.Errorf("stream %s: reading its subjects: %w", stream, err)
	}
	u := &UncapturedStream{Stream: stream, Subjects: []SubjectCount{}, SubjectsInStream: info.State.NumSubjects}
	for subj, msgs := range info.State.Subjects {
		if !capturedByAny(filters, subj) {
			u.Subjects = append(u.Subjects, SubjectCount{Subject: subj, Messages: msgs})
			u.Messages += msgs
		}
	}
	if len(u.Subjects) == 0 {
		return nil, nil
	}
	sort.Slice(u.Subjects, func(i, j int) bool {
		a, b := u.Subjects[i], u.Subjects[j]
		if a.Messages != b.Messages {
			return a.Messages > b.Messages
		}
		return a.Subject < b.Subject
	})
	return u, nil
}

func capturedByAny(filters [][]string, subj string) bool {
	for _, f := range filters {
		for _, filter := range f {
			if subject.Matches(filter, subj) {
				return true
			}
		}
	}
	return false
}
