package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/subject"
)

// routeStatus is one row of `agentrelay status`.
type routeStatus struct {
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
	// PausedBy says whose pause it is: "route_health" (a replica stopped
	// the route for a route-wide condition and is probing) or "operator".
	PausedBy string `json:"paused_by,omitempty"`
	// Ordering is "conversation_key" for an ordered route; Owner the id
	// the server pinned the route to (the replica that owns it), "" when
	// none is pinned.
	Ordering string `json:"ordering,omitempty"`
	Owner    string `json:"owner,omitempty"`
	// OwnerHolds is what the owner answered it holds (see
	// app.OrderedStatusSubject): its blocked keys, the longest waiting
	// first. Nil when it did not answer; OwnerUnanswered says why.
	OwnerHolds      *consumer.OrderedStatus `json:"owner_holds,omitempty"`
	OwnerUnanswered string                  `json:"owner_unanswered,omitempty"`
	DeadLetters     map[string]int          `json:"dead_letters"`
}

// uncapturedStream is a stream that routes read, with the subjects that
// hold messages no route's filter captures: messages that will never
// trigger an agent (a producer's typo, a route not deployed).
type uncapturedStream struct {
	Stream   string         `json:"stream"`
	Subjects []subjectCount `json:"subjects"` // most messages first
	Messages uint64         `json:"messages"` // on those subjects
	// SubjectsInStream is how many subjects hold messages in the stream.
	// Capped: more than status reads (maxStatusSubjects), so Subjects is
	// empty and the stream was not checked.
	SubjectsInStream uint64 `json:"subjects_in_stream"`
	Capped           bool   `json:"capped,omitempty"`
}

type subjectCount struct {
	Subject  string `json:"subject"`
	Messages uint64 `json:"messages"`
}

// maxStatusSubjects bounds the per-subject counts status reads from one
// stream to find subjects no route captures: the answer costs memory and
// time in the server and here, at every --watch refresh. A stream with
// more subjects is reported as not checked.
const maxStatusSubjects = 10_000

// maxUncapturedListed is how many uncaptured subjects of a stream the text
// output lists; --json lists them all.
const maxUncapturedListed = 20

type statusReport struct {
	Time   time.Time     `json:"time"`
	Routes []routeStatus `json:"routes"`
	// Uncaptured lists the streams with messages no route will deliver
	// (empty when there are none).
	Uncaptured []uncapturedStream `json:"uncaptured"`
	DeadLetter struct {
		Stream   string         `json:"stream"`
		Exists   bool           `json:"exists"`
		Messages uint64         `json:"messages"`
		Bytes    uint64         `json:"bytes"`
		Other    map[string]int `json:"other_routes,omitempty"` // dead letters of routes not in the configuration
	} `json:"dead_letter_stream"`
}

// orderedStatusWait bounds how long status waits for the owner of an
// ordered route to answer.
const orderedStatusWait = 2 * time.Second

func newStatusCmd(e *env, g *globalFlags) *cobra.Command {
	var asJSON, noDLQ bool
	var watch time.Duration
	var blockedKeys int
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each route's consumer: pending, ack pending, redelivered, paused, dead letters by reason",
		Long: fmt.Sprintf(`Show, for each route of the configuration, its stream and durable consumer:
messages pending (not yet delivered), ack pending (in flight or waiting out a
retry delay), redelivered, whether the consumer is paused, and its dead
letters by reason. Exits 1 when a route's stream or consumer is missing.

It also lists, for each stream routes read, the subjects that hold messages
no route's filter captures (as the consumer has it): events that will never
trigger an agent. A stream with more than %d subjects is not checked, and
status says so.

For an ordered route it names the replica that owns it (the consumer's
pinned client) and asks that replica which conversation keys are blocked:
whose next event waits behind one being retried (or behind the fence of a
replica that just took the route over), the longest waiting first.

--watch refreshes every interval (e.g. to watch a route drain after a replay).`, maxStatusSubjects),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFlags(durationIn("watch", watch, minWatch, maxWatch, "no refresh"),
				intIn("blocked-keys", blockedKeys, 1, consumer.MaxOrderedStatusKeys, "")); err != nil {
				return err
			}
			t, err := connectTool(cmd.Context(), e, g)
			if err != nil {
				return err
			}
			defer t.Close()
			for {
				rep, err := collectStatus(cmd.Context(), t, !noDLQ, blockedKeys)
				if err != nil {
					return err
				}
				if watch > 0 && isTerminal(e.stdout) {
					fmt.Fprint(e.stdout, "\033[H\033[2J")
				}
				if asJSON {
					if err := writeJSON(e.stdout, rep, watch == 0); err != nil {
						return err
					}
				} else {
					printStatus(e.stdout, rep, !noDLQ)
				}
				if watch == 0 {
					for _, r := range rep.Routes {
						if r.Problem != "" {
							return errors.New("some routes are not set up: see the problem column")
						}
					}
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(watch):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&noDLQ, "no-dead-letters", false, "skip counting dead letters (a scan of the dead-letter stream's headers)")
	cmd.Flags().IntVar(&blockedKeys, "blocked-keys", app.DefaultOrderedStatusKeys,
		fmt.Sprintf("how many blocked keys of an ordered route to list, 1 to %d", consumer.MaxOrderedStatusKeys))
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, fmt.Sprintf("refresh every interval, from %v to %v", minWatch, maxWatch))
	return cmd
}

func collectStatus(ctx context.Context, t *toolConn, countDL bool, blockedKeys int) (*statusReport, error) {
	rep := &statusReport{Time: time.Now().UTC()}
	dlCfg := app.DeadLetter(t.cfg.DeadLetter).WithDefaults()
	rep.DeadLetter.Stream = dlCfg.Stream
	counts := dlq.Counts{}
	store, err := dlq.Open(ctx, t.js, dlCfg)
	switch {
	case errors.Is(err, dlq.ErrNoStream):
	case err != nil:
		return nil, err
	default:
		rep.DeadLetter.Exists = true
		info, err := store.Info(ctx)
		if err != nil {
			return nil, err
		}
		rep.DeadLetter.Messages, rep.DeadLetter.Bytes = info.State.Msgs, info.State.Bytes
		if countDL && info.State.Msgs > 0 {
			if counts, err = store.Count(ctx, dlq.Filter{}); err != nil {
				return nil, err
			}
		}
	}
	known := map[string]bool{}
	// Each stream's routes' filters, as their consumers have them when they
	// exist (an operator may have changed them), else as configured; nil
	// for a route that takes the whole stream.
	var streams []string
	filters := map[string][][]string{}
	for _, rc := range t.cfg.Routes {
		r := app.Route(rc, nil).WithDefaults()
		known[r.Name] = true
		if _, seen := filters[r.Stream]; !seen {
			streams = append(streams, r.Stream)
		}
		filter := r.Subjects
		rs := routeStatus{Route: r.Name, Stream: r.Stream, Consumer: r.Durable, DeadLetters: counts[r.Name]}
		if r.Ordering == consumer.OrderByConversationKey {
			rs.Ordering = string(r.Ordering)
		}
		if rs.DeadLetters == nil {
			rs.DeadLetters = map[string]int{}
		}
		c, err := t.js.Consumer(ctx, r.Stream, r.Durable)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			rs.Problem = "stream does not exist"
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			rs.Problem = "consumer does not exist (the worker creates it at start-up)"
		case err != nil:
			return nil, fmt.Errorf("route %s: %w", r.Name, err)
		default:
			info := c.CachedInfo()
			rs.Pending, rs.AckPending, rs.Redelivered, rs.Waiting = info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting
			rs.Paused = info.Paused
			for _, g := range info.PriorityGroups {
				rs.Owner = g.PinnedClientID
			}
			if rs.Ordering != "" && rs.Owner != "" {
				actx, cancel := context.WithTimeout(ctx, orderedStatusWait)
				rs.OwnerHolds, err = app.AskOrderedStatus(actx, t.nc, r, rs.Owner, blockedKeys)
				cancel()
				if err != nil {
					rs.OwnerUnanswered = err.Error()
				}
			}
			filter = info.Config.FilterSubjects
			if info.Config.FilterSubject != "" {
				filter = []string{info.Config.FilterSubject}
			}
			if info.Paused {
				until := info.TimeStamp.Add(info.PauseRemaining).UTC()
				rs.PauseUntil = &until
				rs.PausedBy = "operator"
				if info.Config.PauseUntil != nil && consumer.IsRouteHealthPause(*info.Config.PauseUntil) {
					rs.PausedBy = "route_health"
				}
			}
		}
		filters[r.Stream] = append(filters[r.Stream], filter)
		rep.Routes = append(rep.Routes, rs)
	}
	rep.Uncaptured = []uncapturedStream{}
	for _, name := range streams {
		u, err := uncaptured(ctx, t.js, name, filters[name], maxStatusSubjects)
		if err != nil {
			return nil, err
		}
		if u != nil {
			rep.Uncaptured = append(rep.Uncaptured, *u)
		}
	}
	for route, byReason := range counts {
		if known[route] {
			continue
		}
		if rep.DeadLetter.Other == nil {
			rep.DeadLetter.Other = map[string]int{}
		}
		for _, n := range byReason {
			rep.DeadLetter.Other[route] += n
		}
	}
	return rep, nil
}

// uncaptured reads the per-subject message counts of stream and returns
// the subjects that none of filters captures (a nil filter captures every
// subject), or nil when there are none. A missing stream is nil too: the
// routes' rows report it.
func uncaptured(ctx context.Context, js jetstream.JetStream, stream string, filters [][]string, maxSubjects uint64) (*uncapturedStream, error) {
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
		return &uncapturedStream{Stream: stream, Subjects: []subjectCount{}, SubjectsInStream: n, Capped: true}, nil
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return nil, fmt.Errorf("stream %s: reading its subjects: %w", stream, err)
	}
	u := &uncapturedStream{Stream: stream, Subjects: []subjectCount{}, SubjectsInStream: info.State.NumSubjects}
	for subj, msgs := range info.State.Subjects {
		if !capturedByAny(filters, subj) {
			u.Subjects = append(u.Subjects, subjectCount{Subject: subj, Messages: msgs})
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

func printStatus(w io.Writer, rep *statusReport, countDL bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	printf(tw, "ROUTE\tSTREAM\tCONSUMER\tPENDING\tACK PENDING\tREDELIVERED\tPAUSED\tDEAD LETTERS\n")
	for _, r := range rep.Routes {
		paused := "no"
		switch {
		case r.PausedBy == "route_health":
			paused = "route health, probing (until " + r.PauseUntil.Format(time.RFC3339) + ")"
		case r.Paused:
			paused = "until " + r.PauseUntil.Format(time.RFC3339)
		}
		dl := reasonsText(r.DeadLetters)
		if !countDL {
			dl = "-"
		}
		if r.Problem != "" {
			printf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t%s\t(%s)\n", r.Route, r.Stream, r.Consumer, dl, r.Problem)
			continue
		}
		printf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.Route, r.Stream, r.Consumer, r.Pending, r.AckPending, r.Redelivered, paused, dl)
	}
	_ = tw.Flush()
	for _, r := range rep.Routes {
		switch {
		case r.Ordering == "":
		case r.Owner != "":
			printf(w, "\nroute %s is ordered by %s: one replica owns it (pinned client %s), the others stand by\n", r.Route, r.Ordering, r.Owner)
			printOwnerHolds(w, r)
		default:
			printf(w, "\nroute %s is ordered by %s: no replica owns it now\n", r.Route, r.Ordering)
		}
	}
	for _, u := range rep.Uncaptured {
		if u.Capped {
			printf(w, "\nstream %s: %d subjects hold messages, more than the %d status reads: not checked for subjects no route captures\n", u.Stream, u.SubjectsInStream, maxStatusSubjects)
			continue
		}
		printf(w, "\nstream %s: %d messages on subjects no route captures (nothing will trigger an agent for them):\n", u.Stream, u.Messages)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for i, sc := range u.Subjects {
			if i == maxUncapturedListed {
				printf(tw, "  ... and %d more subjects (see --json)\n", len(u.Subjects)-i)
				break
			}
			printf(tw, "  %s\t%d\n", sc.Subject, sc.Messages)
		}
		_ = tw.Flush()
	}
	d := rep.DeadLetter
	if !d.Exists {
		printf(w, "\ndead-letter stream %s: not created yet (nothing dead-lettered)\n", d.Stream)
		return
	}
	printf(w, "\ndead-letter stream %s: %d messages, %d bytes", d.Stream, d.Messages, d.Bytes)
	if len(d.Other) > 0 {
		printf(w, "; from routes not in this configuration: %s", reasonsText(d.Other))
	}
	printf(w, "\n")
}

// reasonsText renders counts as "forbidden=2 max_attempts=1", sorted.
func reasonsText(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts[i] = fmt.Sprintf("%s=%d", name, m[k])
	}
	return strings.Join(parts, " ")
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// maxKeyShown bounds a conversation key in the text output (--json has it
// whole).
const maxKeyShown = 64

// printOwnerHolds prints what the owner of an ordered route holds: its
// blocked keys, the longest waiting first.
func printOwnerHolds(w io.Writer, r routeStatus) {
	h := r.OwnerHolds
	if h == nil {
		printf(w, "  blocked keys unknown: %s\n", r.OwnerUnanswered)
		return
	}
	if h.Fenced {
		printf(w, "  fenced: it took the route over and waits for the previous owner's events to be settled or redelivered before it starts any\n")
	}
	printf(w, "  holding %d events, %d being handled; %d keys blocked\n", h.Holding, h.Running, h.BlockedKeys)
	if len(h.Blocked) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	printf(tw, "  KEY\tWAITING\tOLDEST SEQ\tWAITING FOR\tBEHIND SEQ\tITS FAILURES\n")
	for _, b := range h.Blocked {
		behind, failures := "-", "-"
		if b.BehindSeq != 0 {
			behind, failures = fmt.Sprint(b.BehindSeq), fmt.Sprint(b.BehindFailures)
		}
		printf(tw, "  %s\t%d\t%d\t%s\t%s\t%s\n", safe(b.Key, maxKeyShown), b.Waiting, b.OldestSeq,
			(time.Duration(b.WaitingSeconds) * time.Second).String(), behind, failures)
	}
	_ = tw.Flush()
	if more := h.BlockedKeys - len(h.Blocked); more > 0 {
		printf(w, "  ... and %d more blocked keys (--blocked-keys lists up to %d)\n", more, consumer.MaxOrderedStatusKeys)
	}
}
