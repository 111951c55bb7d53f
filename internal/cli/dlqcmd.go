package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// filterFlags are the dead-letter filters shared by list, replay and purge.
type filterFlags struct {
	route, reason, subject, since, until string
	status, limit                        int
	seqs                                 []string
}

func (f *filterFlags) register(cmd *cobra.Command, e *env, g *globalFlags) {
	fl := cmd.Flags()
	defer func() {
		_ = cmd.RegisterFlagCompletionFunc("route", completeRoutes(e, g, false))
		_ = cmd.RegisterFlagCompletionFunc("reason", completeReasons)
		_ = cmd.RegisterFlagCompletionFunc("seq", completeLetters(e, g, true))
	}()
	fl.StringVar(&f.route, "route", "", "only this route")
	fl.StringVar(&f.reason, "reason", "", "only this reason (forbidden, max_attempts, invalid_json, ...)")
	fl.IntVar(&f.status, "status", 0, "only this last HTTP status (100-599)")
	fl.StringVar(&f.subject, "subject", "", "only this original subject (wildcards * and > allowed)")
	fl.StringVar(&f.since, "since", "", "only dead letters stored since a time (RFC 3339) or a duration ago (2h, 3d)")
	fl.StringVar(&f.until, "until", "", "only dead letters stored before a time or a duration ago")
	fl.StringSliceVar(&f.seqs, "seq", nil, "only these dead-letter sequences (comma-separated or repeated)")
	fl.IntVar(&f.limit, "limit", 0, "at most this many (0: all)")
}

// check bounds the numeric filters.
func (f *filterFlags) check() []error {
	return []error{
		intIn("status", f.status, minHTTPStatus, maxHTTPStatus, "any status"),
		intIn("limit", f.limit, 1, maxLimit, "all"),
	}
}

func (f *filterFlags) filter(now time.Time) (dlq.Filter, error) {
	out := dlq.Filter{Route: f.route, Reason: f.reason, Status: f.status, Subject: f.subject, Limit: f.limit}
	var err error
	if out.Since, err = parseTime(f.since, now); err != nil {
		return out, usageError{fmt.Errorf("--since: %w", err)}
	}
	if out.Until, err = parseTime(f.until, now); err != nil {
		return out, usageError{fmt.Errorf("--until: %w", err)}
	}
	for _, s := range f.seqs {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
		if err != nil || n == 0 {
			return out, usageError{fmt.Errorf("--seq %q is not a sequence number", s)}
		}
		out.Seqs = append(out.Seqs, n)
	}
	sort.Slice(out.Seqs, func(i, j int) bool { return out.Seqs[i] < out.Seqs[j] })
	return out, nil
}

// open parses the filter, opens the dead-letter stream and checks that
// the route and reason filters name something that exists.
func (f *filterFlags) open(ctx context.Context, e *env, g *globalFlags) (dlq.Filter, *toolConn, *dlq.Store, error) {
	filter, err := f.filter(time.Now())
	if err != nil {
		return filter, nil, nil, err
	}
	t, s, err := openStore(ctx, e, g)
	if err != nil {
		return filter, nil, nil, err
	}
	if err := f.known(ctx, t, s); err != nil {
		t.Close()
		return filter, nil, nil, err
	}
	return filter, t, s, nil
}

// known refuses a --route or --reason that neither the configuration (or
// this version's reasons) nor any dead letter knows: a typo would
// otherwise select nothing, silently. A route gone from the configuration,
// or a reason of another version, still filters while letters carry it.
func (f *filterFlags) known(ctx context.Context, t *toolConn, s *dlq.Store) error {
	routes := make([]string, 0, len(t.cfg.Routes))
	for _, r := range t.cfg.Routes {
		routes = append(routes, r.Name)
	}
	for _, c := range []struct {
		flag, value, what string
		known             []string
		filter            dlq.Filter
	}{
		{"route", f.route, "route", routes, dlq.Filter{Route: f.route, Limit: 1}},
		{"reason", f.reason, "reason", dlq.Reasons(), dlq.Filter{Reason: f.reason, Limit: 1}},
	} {
		if c.value == "" || slices.Contains(c.known, c.value) {
			continue
		}
		n, err := s.Matching(ctx, c.filter)
		if err != nil {
			return err
		}
		if n == 0 {
			return usageError{fmt.Errorf("--%s: no %s %q in the configuration or the dead letters%s", c.flag, c.what, c.value, suggestion(c.value, c.known))}
		}
	}
	return nil
}

func (f *filterFlags) empty() bool {
	return f.route == "" && f.reason == "" && f.status == 0 && f.subject == "" && f.since == "" && f.until == "" && len(f.seqs) == 0
}

func newDLQCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Browse, replay and purge dead letters",
		Long: `Browse, replay and purge the dead-letter stream. Filters (--route, --reason,
--status, --subject, --since, --until, --seq, --limit) apply to list, replay
and purge alike, so "list" shows exactly what "replay" or "purge" would touch.`,
	}
	cmd.AddCommand(newDLQListCmd(e, g), newDLQShowCmd(e, g), newDLQReplayCmd(e, g), newDLQPurgeCmd(e, g))
	return cmd
}

func openStore(ctx context.Context, e *env, g *globalFlags) (*toolConn, *dlq.Store, error) {
	t, err := connectTool(ctx, e, g)
	if err != nil {
		return nil, nil, err
	}
	s, err := dlq.Open(ctx, t.js, appconfig.DeadLetter(t.cfg.DeadLetter))
	if err != nil {
		t.Close()
		return nil, nil, err
	}
	return t, s, nil
}

// letterJSON is a dead letter as `dlq list --json` and `dlq show --json` print it.
type letterJSON struct {
	Seq            uint64              `json:"seq"`
	Stored         time.Time           `json:"stored"`
	Route          string              `json:"route"`
	Reason         string              `json:"reason"`
	Class          string              `json:"class"`
	Status         int                 `json:"status,omitempty"`
	Error          string              `json:"error,omitempty"`
	TriggerID      string              `json:"trigger_id"`
	Stream         string              `json:"stream"`
	StreamSeq      uint64              `json:"stream_seq"`
	Subject        string              `json:"subject"`
	Attempts       int                 `json:"attempts"`
	TotalAttempts  int                 `json:"total_attempts"` // over every replay of the event
	Replays        int                 `json:"replays"`        // replays of the event before this letter
	ReplayOf       string              `json:"replay_of,omitempty"`
	OriginStream   string              `json:"origin_stream,omitempty"` // where the event was first published
	OriginSeq      uint64              `json:"origin_seq,omitempty"`
	IdempotencyKey string              `json:"idempotency_key,omitempty"`
	Size           int                 `json:"size"`
	BodyOmitted    string              `json:"body_omitted,omitempty"`
	Headers        map[string][]string `json:"headers,omitempty"`
	Body           *string             `json:"body,omitempty"`
}

func toJSON(l dlq.Letter, withBody bool) letterJSON {
	j := letterJSON{
		Seq: l.Seq, Stored: l.Stored.UTC(), Route: l.Route, Reason: l.Reason, Class: l.Class, Status: l.Status,
		Error: l.Error, TriggerID: l.TriggerID, Stream: l.Stream, StreamSeq: l.StreamSeq, Subject: l.OrigSubject,
		Attempts: l.Attempts, TotalAttempts: l.TotalAttempts(), Replays: l.Replays, ReplayOf: l.ReplayOf,
		IdempotencyKey: l.IdempotencyKey, Size: l.Size, BodyOmitted: l.BodyOmitted,
	}
	j.OriginStream, j.OriginSeq = l.Origin()
	if withBody {
		j.Headers = l.Header
		b := string(l.Data)
		j.Body = &b
	}
	return j
}

func newDLQListCmd(e *env, g *globalFlags) *cobra.Command {
	f := &filterFlags{}
	var asJSON bool
	var preview int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead letters with their reason, status and a body preview",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFlags(append(f.check(), intIn("preview", preview, 0, maxPreview, ""))...); err != nil {
				return err
			}
			filter, t, s, err := f.open(cmd.Context(), e, g)
			if err != nil {
				return err
			}
			defer t.Close()
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
			if !asJSON {
				printf(tw, "SEQ\tDEAD-LETTERED\tROUTE\tREASON\tSTATUS\tATTEMPTS\tREPLAYS\tSUBJECT\tKEY\tBODY\n")
			}
			n := 0
			err = s.Scan(cmd.Context(), filter, preview == 0 && !asJSON, func(l dlq.Letter) (bool, error) {
				n++
				if asJSON {
					return true, writeJSON(e.stdout, toJSON(l, false))
				}
				status := "-"
				if l.Status != 0 {
					status = strconv.Itoa(l.Status)
				}
				printf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", l.Seq, l.Stored.UTC().Format(time.RFC3339),
					safe(l.Route, 40), safe(l.Reason, 40), status, l.TotalAttempts(), l.Replays, safe(l.OrigSubject, 60), safe(l.IdempotencyKey, 40), bodyPreview(l, preview))
				return true, nil
			})
			if !asJSON {
				_ = tw.Flush()
				printf(e.stderr, "%s\n", plural(n, "dead letter", "dead letters"))
			}
			return err
		},
	}
	f.register(cmd, e, g)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object a dead letter, one a line (JSON Lines)")
	cmd.Flags().IntVar(&preview, "preview", 60, fmt.Sprintf("characters of the body to show, at most %d (0: none, and bodies are not fetched)", maxPreview))
	return cmd
}

func bodyPreview(l dlq.Letter, n int) string {
	if l.BodyOmitted != "" {
		return fmt.Sprintf("(body not stored: %s)", safe(l.BodyOmitted, 20))
	}
	if n == 0 || l.Data == nil {
		return "(" + plural(l.Size, "byte", "bytes") + ")"
	}
	return safe(string(l.Data), n)
}

func newDLQShowCmd(e *env, g *globalFlags) *cobra.Command {
	var raw, asJSON bool
	cmd := &cobra.Command{
		Use:               "show SEQ",
		ValidArgsFunction: completeLetters(e, g, false),
		Short:             "Show one dead letter: every header and the body",
		Long: `Show one dead letter: why it is one, where it came from, every header and the
body. Control characters are escaped; --raw writes the body's exact bytes to
stdout instead (for piping into a file or jq; refused when stdout is a
terminal).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || seq == 0 {
				return usageError{fmt.Errorf("%q is not a sequence number (from 1)", args[0])}
			}
			if raw && telemetry.IsTerminal(e.stdout) {
				// The exact bytes are for a file or a program; on a
				// terminal they could carry escape sequences.
				return usageError{errors.New("--raw writes the body's exact bytes: redirect it to a file or pipe it into a program, not a terminal")}
			}
			t, s, err := openStore(cmd.Context(), e, g)
			if err != nil {
				return err
			}
			defer t.Close()
			l, err := s.Get(cmd.Context(), seq)
			if err != nil {
				return err
			}
			switch {
			case raw:
				_, err = e.stdout.Write(l.Data)
				return err
			case asJSON:
				return writeJSON(e.stdout, toJSON(l, true))
			}
			printLetter(e.stdout, l)
			return nil
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "write only the body, unescaped")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the dead letter as one JSON object on one line")
	return cmd
}

func printLetter(w io.Writer, l dlq.Letter) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { printf(tw, "%s\t%s\n", k, v) }
	row("sequence", strconv.FormatUint(l.Seq, 10))
	row("dead-lettered", l.Stored.UTC().Format(time.RFC3339Nano))
	row("reason", l.Reason)
	row("class", l.Class)
	if l.Status != 0 {
		row("status", strconv.Itoa(l.Status))
	}
	if l.Error != "" {
		row("error", l.Error)
	}
	row("route", l.Route)
	row("trigger id", l.TriggerID)
	row("from", fmt.Sprintf("%s seq %d, subject %s", l.Stream, l.StreamSeq, l.OrigSubject))
	attempts := strconv.Itoa(l.Attempts)
	if l.Replays > 0 {
		attempts += fmt.Sprintf(" (%d over the event's %s)", l.TotalAttempts(), plural(l.Replays, "replay", "replays"))
		st, seq := l.Origin()
		row("replays", fmt.Sprintf("%d; this letter is of the replay of dead letter %s; first published as %s seq %d", l.Replays, l.ReplayOf, st, seq))
	}
	row("attempts", attempts)
	row("idempotency key", l.IdempotencyKey)
	if l.BodyOmitted != "" {
		row("body", fmt.Sprintf("not stored (%s): %s, sha256 %s", l.BodyOmitted, plural(l.BodySize, "byte", "bytes"), l.BodySHA256))
	}
	_ = tw.Flush()
	printf(w, "\nheaders:\n")
	keys := make([]string, 0, len(l.Header))
	for k := range l.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range l.Header[k] {
			printf(w, "  %s: %s\n", k, v)
		}
	}
	printf(w, "\nbody (%s):\n%s\n", plural(len(l.Data), "byte", "bytes"), string(l.Data))
}

// replayFlags are dlq replay's flags.
type replayFlags struct {
	filterFlags
	dryRun, newKey, allowTriggerChange, force bool
	perSecond                                 float64
	bodyFile                                  string
}

func newDLQReplayCmd(e *env, g *globalFlags) *cobra.Command {
	f := &replayFlags{}
	cmd := &cobra.Command{
		Use:               "replay [SEQ...]",
		ValidArgsFunction: completeLetters(e, g, true),
		Short:             "Republish dead letters to their original subjects, then delete them",
		Long: `Republish the selected dead letters to their original subjects, with their
original Idempotency-Key so that an event the API had in fact accepted is not
run twice (--new-key gives each a new key instead, still the same on every
replay of that dead letter). Each dead letter is deleted only after the work
stream acknowledged its replay, so an interrupted replay can be run again:
nothing is lost and nothing is published twice.

A dead letter's headers are anyone's who may publish to the dead-letter
subjects, and replay publishes with your credentials, so a letter is
replayed only to a subject its own route (Agentrelay-Route) consumes, for the
trigger that route calls, from the dead-letter subject that subject maps to,
and never to a system subject ($JS.*, $SYS.*, $KV.*, any "$" subject,
_INBOX.*, _R_.*) or one with wildcards, empty tokens, spaces or control
characters. On a route that serves many agents (map.trigger_id), the letter's
trigger must be in the route's allowed_trigger_ids, and the route's mapping
must still send the event to it (--dry-run names the trigger each replay goes
to). Anything else is refused and left in place: --dry-run lists each refusal
with its reason, and a replay counts them (and exits 1).

A letter whose reason blames the message itself (invalid_json, missing_input,
input_too_large, invalid_utf8, invalid_idempotency_key,
invalid_conversation_key, invalid_cloudevent) would only be dead-lettered
again: it is refused unless --force, or replayed with a corrected body
(--body-file, one letter at a time, keeping its Idempotency-Key; a body the
route would refuse again is refused). mapping_failed and trigger_not_allowed
are fixed in the configuration (the mapping, allowed_trigger_ids): replay
them once the worker runs the fix. A letter stored without its body (too
large) is replayed only with --body-file. A replay that fails again keeps its
history: its new dead letter counts the replays and every attempt ("dlq list"
shows both).

Fix the cause first (permissions, trigger id, the agent), then replay; use
"agentrelay status --watch 2s" to watch the route drain.`,
		Example: `  agentrelay dlq replay --route complaints --reason forbidden --dry-run
  agentrelay dlq replay --route complaints --reason forbidden --rate 20
  agentrelay dlq show 42 --raw > fixed.json   # edit it, then:
  agentrelay dlq replay 42 --body-file fixed.json`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runReplay(cmd.Context(), e, g, f, args) },
	}
	f.register(cmd, e, g)
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "show what would be replayed and what refused, and why; change nothing")
	cmd.Flags().BoolVar(&f.newKey, "new-key", false, "give each replay a new Idempotency-Key (the API will run the event again even if it had accepted it)")
	cmd.Flags().BoolVar(&f.allowTriggerChange, "allow-trigger-change", false, "replay letters to their route's current trigger even when it is not the one they were dead-lettered for (after fixing a route's trigger_id or mapping)")
	cmd.Flags().Float64Var(&f.perSecond, "rate", 50, fmt.Sprintf("replays per second at most (up to %v)", maxReplayRate))
	cmd.Flags().BoolVar(&f.force, "force", false, "replay letters whose reason blames the message itself (invalid_json, ...) unchanged")
	cmd.Flags().StringVar(&f.bodyFile, "body-file", "", fmt.Sprintf("replay one dead letter with this corrected body (at most %d MiB), keeping its key", maxBodyFile>>20))
	return cmd
}

// runReplay is dlq replay.
func runReplay(ctx context.Context, e *env, g *globalFlags, f *replayFlags, args []string) error {
	if err := checkFlags(append(f.check(), positiveUpTo("rate", f.perSecond, maxReplayRate))...); err != nil {
		return err
	}
	f.seqs = append(f.seqs, args...)
	var body []byte
	if f.bodyFile != "" {
		if len(f.seqs) != 1 || strings.Contains(f.seqs[0], ",") {
			return usageError{errors.New("--body-file replays one dead letter: name exactly one (dlq replay SEQ --body-file FILE)")}
		}
		var err error
		if body, err = readBodyFile(f.bodyFile); err != nil {
			return err
		}
	}
	filter, t, s, err := f.open(ctx, e, g)
	if err != nil {
		return err
	}
	defer t.Close()
	policy, err := replayPolicy(ctx, t, f.allowTriggerChange)
	if err != nil {
		return err
	}
	policy.ForcePoison = f.force
	o := replayOpts{dryRun: f.dryRun, newKey: f.newKey, perSecond: f.perSecond, body: body}
	if !f.dryRun {
		// Traced when the OTEL_* environment says so: each replay is
		// then a span in the original event's trace.
		tp, stop, err := toolTracer(ctx, e, g, false)
		if err != nil {
			return err
		}
		defer stop()
		o.tracer = tp
	}
	return replay(ctx, e, s, policy, filter, o)
}

// maxBodyFile bounds --body-file: far above any server's max_payload, and
// it is read before connecting.
const maxBodyFile = 64 << 20

// readBodyFile reads a corrected body, refusing one beyond maxBodyFile.
func readBodyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("--body-file: %w", err)}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxBodyFile+1))
	if err != nil {
		return nil, usageError{fmt.Errorf("--body-file: %w", err)}
	}
	if len(b) > maxBodyFile {
		return nil, usageError{fmt.Errorf("--body-file %s is larger than %d MiB", path, maxBodyFile>>20)}
	}
	return b, nil
}

// replayOpts are replay's flags.
type replayOpts struct {
	dryRun, newKey bool
	perSecond      float64
	body           []byte               // a corrected body for the one letter selected; nil keeps the stored one
	tracer         trace.TracerProvider // traces each replay (see dlq.Store.TraceReplay); nil: off
}

// replayPolicy is where the configuration lets replays go (see
// inspect.Source.ReplayPolicy).
func replayPolicy(ctx context.Context, t *toolConn, allowTriggerChange bool) (dlq.Policy, error) {
	return t.source().ReplayPolicy(ctx, allowTriggerChange)
}

// refusalText is why a letter is refused, with what to do about a trigger
// that changed or that the route may not call.
func refusalText(r *dlq.Refusal) string {
	switch {
	case errors.Is(r, dlq.ErrTriggerChanged):
		return r.Reason + " (--allow-trigger-change to replay it to the route's trigger)"
	case errors.Is(r, dlq.ErrTriggerNotAllowed):
		return r.Reason + " (add the id to the route's allowed_trigger_ids, or correct its mapping, to replay it)"
	}
	return r.Reason
}

func replay(ctx context.Context, e *env, s *dlq.Store, policy dlq.Policy, filter dlq.Filter, o replayOpts) error {
	filter, err := s.Bounded(ctx, filter)
	if err != nil {
		return err
	}
	total, err := s.Matching(ctx, filter)
	if err != nil {
		return err
	}
	if total == 0 {
		printf(e.stdout, "no dead letters match\n")
		return nil
	}
	r := &replayer{e: e, s: s, policy: policy, o: o, limiter: rate.NewLimiter(rate.Limit(o.perSecond), 1)}
	if !o.dryRun && telemetry.IsTerminal(e.stderr) {
		r.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionSetDescription("replaying"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("letters"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	start := time.Now()
	err = s.Scan(ctx, filter, false, func(l dlq.Letter) (bool, error) {
		if o.body != nil {
			l = l.WithBody(o.body)
		}
		if o.dryRun {
			return r.dryRun(ctx, l)
		}
		return r.replay(ctx, l)
	})
	if r.bar != nil {
		_ = r.bar.Finish()
	}
	return r.summary(err, total, time.Since(start).Round(time.Millisecond))
}

// replayer replays letters one by one, counting.
type replayer struct {
	e       *env
	s       *dlq.Store
	policy  dlq.Policy
	o       replayOpts
	limiter *rate.Limiter
	bar     *progressbar.ProgressBar

	replayed, dups, refused int
}

// dryRun says what replaying l would do.
func (r *replayer) dryRun(ctx context.Context, l dlq.Letter) (bool, error) {
	var ref *dlq.Refusal
	target, err := r.s.Check(ctx, r.policy, l)
	if errors.As(err, &ref) {
		r.refused++
		printf(r.e.stdout, "refuse %d: %s\n", l.Seq, refusalText(ref))
		return true, nil
	}
	if err != nil {
		return false, err
	}
	m, err := r.s.ReplayMsg(l, r.o.newKey)
	if err != nil {
		return false, err
	}
	// The key the worker will really use: the one the replay carries or,
	// for a letter whose key could not be used, the replay's message id.
	key, kerr := r.s.ReplayKey(l, m)
	if kerr != nil {
		key = "none usable (" + kerr.Error() + "): the worker would dead-letter it as invalid_idempotency_key"
	} else if m.Header.Get("Idempotency-Key") == "" {
		key += " (the replay's message id: the letter's own key could not be used)"
	}
	what := ""
	if target.Route.ServesManyAgents() && target.TriggerID != "" {
		what = " for trigger " + safe(target.TriggerID, 80)
	}
	if l.Corrected {
		what += fmt.Sprintf(", with the corrected body (%s)", plural(len(l.Data), "byte", "bytes"))
	}
	printf(r.e.stdout, "would replay %d (%s, %s) to %s%s with Idempotency-Key %s\n",
		l.Seq, safe(l.Route, 40), safe(l.Reason, 40), safe(m.Subject, 80), what, safe(key, 200))
	r.replayed++
	return true, nil
}

// replay replays l, at the rate asked.
func (r *replayer) replay(ctx context.Context, l dlq.Letter) (bool, error) {
	if r.bar != nil {
		defer func() { _ = r.bar.Add(1) }()
	}
	// Refusals cost no publish, so they do not wait for the limiter.
	if _, err := r.s.Check(ctx, r.policy, l); err == nil {
		if err := r.limiter.Wait(ctx); err != nil {
			return false, err
		}
	}
	rctx, span := r.s.TraceReplay(ctx, r.o.tracer, l)
	ack, err := r.s.Replay(rctx, r.policy, l, r.o.newKey)
	dlq.EndReplay(span, ack, err)
	var ref *dlq.Refusal
	if errors.As(err, &ref) {
		r.refused++
		printf(r.e.stdout, "refused %d: %s\n", l.Seq, refusalText(ref))
		return true, nil
	}
	if err != nil {
		return false, err
	}
	r.replayed++
	if ack.Duplicate {
		r.dups++
	}
	return true, nil
}

// summary says what was done, and is replay's error.
func (r *replayer) summary(err error, total int, took time.Duration) error {
	w := r.e.stdout
	left := ""
	if r.refused > 0 {
		left = fmt.Sprintf("; refused %d, left in place (dlq replay --dry-run says why)", r.refused)
	}
	switch {
	case r.o.dryRun:
		printf(w, "dry run: %d would be replayed, %d refused\n", r.replayed, r.refused)
	case err != nil:
		printf(w, "replayed %d of %s in %s before stopping%s; run the same command again to continue (it is safe)\n", r.replayed, plural(total, "dead letter", "dead letters"), took.String(), left)
	default:
		printf(w, "replayed %s in %s", plural(r.replayed, "dead letter", "dead letters"), took.String())
		if r.dups > 0 {
			printf(w, " (%d had already been replayed by an earlier, interrupted run)", r.dups)
		}
		printf(w, "%s\n", left)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted")
	case err != nil:
		return err
	case r.refused > 0 && !r.o.dryRun:
		return fmt.Errorf("%d of %s refused", r.refused, plural(total, "dead letter", "dead letters"))
	}
	return nil
}

func newDLQPurgeCmd(e *env, g *globalFlags) *cobra.Command {
	f := &filterFlags{}
	var yes bool
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Delete dead letters (asks for confirmation unless --yes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFlags(f.check()...); err != nil {
				return err
			}
			filter, t, s, err := f.open(cmd.Context(), e, g)
			if err != nil {
				return err
			}
			defer t.Close()
			// Only what exists now, before the question: letters that
			// arrive while the operator reads it are not theirs to delete.
			if filter, err = s.Bounded(cmd.Context(), filter); err != nil {
				return err
			}
			total, err := s.Matching(cmd.Context(), filter)
			if err != nil {
				return err
			}
			if total == 0 {
				printf(e.stdout, "no dead letters match\n")
				return nil
			}
			if !yes {
				what := "matching dead letters"
				if f.empty() {
					what = "dead letters (ALL of them)"
				}
				printf(e.stderr, "Delete %d %s from %s? This cannot be undone. [y/N] ", total, what, s.Name())
				answer, _ := bufio.NewReader(e.stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return errors.New("not confirmed; nothing deleted (use --yes in scripts)")
				}
			}
			deleted := 0
			err = s.Scan(cmd.Context(), filter, true, func(l dlq.Letter) (bool, error) {
				if err := s.Delete(cmd.Context(), l.Seq); err != nil {
					return false, fmt.Errorf("deleting dead letter %d: %w", l.Seq, err)
				}
				deleted++
				return true, nil
			})
			printf(e.stdout, "deleted %s\n", plural(deleted, "dead letter", "dead letters"))
			return err
		},
	}
	f.register(cmd, e, g)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
