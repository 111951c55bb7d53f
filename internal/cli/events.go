package cli

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/internal/inspect"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// `agentrelay events show` answers "what happened to event X?" from what
// NATS holds (internal/inspect tells the story; this prints it).

func newEventsCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Tell what happened to an event",
	}
	cmd.AddCommand(newEventsShowCmd(e, g))
	return cmd
}

// Defaults and bounds of events show's flags.
const (
	defaultEventDeadline               = 30 * time.Second
	minEventDeadline, maxEventDeadline = time.Second, time.Hour
)

// eventsShowFlags are events show's flags.
type eventsShowFlags struct {
	asJSON, progress bool
	scan             int
	since, until     string
	deadline         time.Duration
}

func newEventsShowCmd(e *env, g *globalFlags) *cobra.Command {
	f := &eventsShowFlags{}
	cmd := &cobra.Command{
		Use:               "show MSG-ID | STREAM:SEQ",
		ValidArgsFunction: completeEventRef(e, g),
		Short:             "Tell an event's story: route, key, pending, in flight, accepted, dead-lettered, replayed",
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

For an event that waits on a route a replica holds stopped, it says so, and
why (as agentrelay status does).

STREAM:SEQ names a message (WORK:42); anything else is a message id or an
Idempotency-Key. JetStream cannot be asked for a message by id, so the
streams are read, headers only: each route's stream and the dead-letter
stream at once, newest first, until the id is found, the stream's start, or
--deadline. --since and --until narrow the search by stored time (the read
starts at --since on the server), so an event is found at once at any
stream size when roughly when it was published is known. It says how far
it looked. Progress goes to stderr on a terminal (--progress: always).

--json prints the report as one JSON object on one line. What cannot be
known is said under "cannot tell".`,
		Example: `  agentrelay events show WORK:42
  agentrelay events show order-1234 --since 2h --until 1h
  agentrelay events show order-1234 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := f.query(args[0], time.Now())
			if err != nil {
				return err
			}
			t, err := connectTool(cmd.Context(), e, g)
			if err != nil {
				return err
			}
			defer t.Close()
			p := newProgressPrinter(e.stderr, f.progress)
			q.Progress = p.report
			rep, err := t.source().Events(cmd.Context(), q)
			p.done()
			if err != nil {
				return err
			}
			if err := printEvents(e.stdout, rep, f.asJSON); err != nil || f.asJSON {
				return err
			}
			printMapped(cmd.Context(), e.stdout, t, rep.Events)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.asJSON, "json", false, "print the report as one JSON object on one line")
	fl.StringVar(&f.since, "since", "", "search only messages stored since a time (RFC 3339) or a duration ago (2h, 3d)")
	fl.StringVar(&f.until, "until", "", "search only messages stored before a time or a duration ago")
	fl.DurationVar(&f.deadline, "deadline", defaultEventDeadline, fmt.Sprintf("give up searching after this long and say how far it looked, from %v to %v", minEventDeadline, maxEventDeadline))
	fl.BoolVar(&f.progress, "progress", false, "report the search's progress on stderr even when it is not a terminal")
	fl.IntVar(&f.scan, "scan", inspect.DefaultScan, "dead letters searched for the event's letters, and messages after it searched for its replays, at most")
	return cmd
}

// query checks the flags and builds the query.
func (f *eventsShowFlags) query(arg string, now time.Time) (inspect.EventQuery, error) {
	q := inspect.EventQuery{Arg: arg, Scan: f.scan}
	err := checkFlags(intIn("scan", f.scan, 1, maxLimit, ""), durationIn("deadline", f.deadline, minEventDeadline, maxEventDeadline, ""))
	if err != nil {
		return q, err
	}
	if q.Since, err = parseTime(f.since, now); err != nil {
		return q, usageError{fmt.Errorf("--since: %w", err)}
	}
	if q.Until, err = parseTime(f.until, now); err != nil {
		return q, usageError{fmt.Errorf("--until: %w", err)}
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return q, usageError{errors.New("--since must be before --until")}
	}
	q.Deadline = now.Add(f.deadline)
	return q, nil
}

// ErrEventNotFound: events show found no message.
var ErrEventNotFound = errors.New("event not found")

func printEvents(w io.Writer, rep *inspect.EventReport, asJSON bool) error {
	if asJSON {
		if err := writeJSON(w, rep); err != nil {
			return err
		}
	} else {
		for i, s := range rep.Events {
			if i > 0 {
				printf(w, "\n")
			}
			printStory(w, s, "")
		}
		for _, n := range rep.Notes {
			printf(w, "%s\n", n)
		}
	}
	if len(rep.Events) == 0 {
		return ErrEventNotFound
	}
	return nil
}

// printStory prints s as text, indented by indent.
func printStory(w io.Writer, s inspect.EventStory, indent string) {
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
		switch {
		case r.KeyProblem != "":
			row("  its key there", "none usable: "+r.KeyProblem)
		case r.Key != "":
			row("  its key there", r.Key+" ("+r.KeyFrom+")")
		}
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

// plural is n and its noun, in the right number: "1 dead letter".
func plural(n int, one, many string) string { return inspect.Count(n, one, many) }

// progressPrinter shows a long search's progress on stderr: one line,
// redrawn, on a terminal; with --progress elsewhere, a line a second.
type progressPrinter struct {
	w        io.Writer
	tty, on  bool
	mu       sync.Mutex
	last     time.Time
	drawn    bool
	interval time.Duration
}

func newProgressPrinter(w io.Writer, force bool) *progressPrinter {
	tty := telemetry.IsTerminal(w)
	return &progressPrinter{w: w, tty: tty, on: tty || force, interval: time.Second}
}

// report is inspect's progress callback; it may be called from several
// goroutines (one a stream).
func (p *progressPrinter) report(pr inspect.Progress) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf("searching %s: %d of %s read (newest first), at %s, %v",
		pr.Stream, pr.Read, plural(int(pr.Total), "message", "messages"), pr.At.UTC().Format(time.RFC3339), pr.Elapsed.Round(100*time.Millisecond))
	if p.tty {
		printf(p.w, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	if now := time.Now(); now.Sub(p.last) >= p.interval {
		p.last = now
		printf(p.w, "%s\n", line)
	}
}

// done clears the progress line.
func (p *progressPrinter) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
