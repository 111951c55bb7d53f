package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/internal/inspect"
	"github.com/agentrelay/agentrelay/internal/routestatus"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// maxUncapturedListed is how many uncaptured subjects of a stream the text
// output lists; --json lists them all.
const maxUncapturedListed = 20

// Bounds of --wait.
const minStatusWait, maxStatusWait = 100 * time.Millisecond, time.Minute

func newStatusCmd(e *env, g *globalFlags) *cobra.Command {
	var asJSON, noDLQ bool
	var watch, wait time.Duration
	var blockedKeys int
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each route: its consumer, its health on each replica and why, its dead letters by reason",
		Long: fmt.Sprintf(`Show, for each route of the configuration, its stream and durable consumer:
messages pending (not yet delivered), ack pending (in flight or waiting out a
retry delay), redelivered, whether the consumer is paused, and its dead
letters by reason. Exits 1 when a route's stream or consumer is missing.

It asks every replica (the worker's status service, on
agentrelay.status.<stream>.<consumer>) what it knows of each route, and shows
its health there; for a route a replica holds stopped, why: the condition,
its cause (class, last status or error), since when, the probe message's
key, the next probe, and who paused it (route health or an operator). It
waits up to --wait, and stops early once every replica that serves a route
has answered. Every answer is checked before it is shown, and status says
which replica sent it; an answer out of bounds is refused, saying why.

It also lists, for each stream routes read, the subjects that hold messages
no route's filter captures (as the consumer has it): events that will never
trigger an agent. A stream with more than %d subjects is not checked.

For an ordered route it names the replica that owns it (the consumer's
pinned client) and shows which conversation keys it holds blocked: whose
next event waits behind one being retried (or behind the fence of a replica
that just took the route over), the longest waiting first.

--watch refreshes every interval (e.g. to watch a route drain after a replay).
--json prints the report as one JSON object on one line (one a refresh with
--watch), each replica's answer included.`, inspect.MaxStatusSubjects),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFlags(durationIn("watch", watch, minWatch, maxWatch, "no refresh"),
				durationIn("wait", wait, minStatusWait, maxStatusWait, ""),
				intIn("blocked-keys", blockedKeys, 1, routestatus.MaxBlockedKeys, "")); err != nil {
				return err
			}
			t, err := connectTool(cmd.Context(), e, g)
			if err != nil {
				return err
			}
			defer t.Close()
			o := inspect.StatusOptions{CountDeadLetters: !noDLQ, BlockedKeys: blockedKeys, Wait: wait}
			for {
				rep, err := t.source().Status(cmd.Context(), o)
				if err != nil {
					return err
				}
				if watch > 0 && !asJSON && telemetry.IsTerminal(e.stdout) {
					fmt.Fprint(e.stdout, "\033[H\033[2J")
				}
				if asJSON {
					err = writeJSON(e.stdout, rep)
				} else {
					printStatus(e.stdout, rep, !noDLQ)
				}
				if err != nil || watch == 0 {
					return errors.Join(err, problems(rep))
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(watch):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as one JSON object on one line")
	cmd.Flags().BoolVar(&noDLQ, "no-dead-letters", false, "skip counting dead letters (a scan of the dead-letter stream's headers)")
	cmd.Flags().IntVar(&blockedKeys, "blocked-keys", routestatus.DefaultKeys,
		fmt.Sprintf("how many blocked keys of an ordered route to list, 1 to %d", routestatus.MaxBlockedKeys))
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, fmt.Sprintf("refresh every interval, from %v to %v", minWatch, maxWatch))
	cmd.Flags().DurationVar(&wait, "wait", inspect.DefaultStatusWait, fmt.Sprintf("how long to wait for the replicas' answers, from %v to %v", minStatusWait, maxStatusWait))
	return cmd
}

// problems is the error status exits with: a route not set up.
func problems(rep *inspect.StatusReport) error {
	for _, r := range rep.Routes {
		if r.Problem != "" {
			return errors.New("some routes are not set up: see the problem column")
		}
	}
	return nil
}

func printStatus(w io.Writer, rep *inspect.StatusReport, countDL bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	printf(tw, "ROUTE\tSTREAM\tCONSUMER\tPENDING\tACK PENDING\tREDELIVERED\tPAUSED\tHEALTH\tDEAD LETTERS\n")
	for _, r := range rep.Routes {
		dl := reasonsText(r.DeadLetters)
		if !countDL {
			dl = "-"
		}
		if r.Problem != "" {
			printf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t%s\t(%s)\n", r.Route, r.Stream, r.Consumer, dl, r.Problem)
			continue
		}
		printf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Route, r.Stream, r.Consumer, r.Pending, r.AckPending, r.Redelivered,
			pausedText(r), healthText(r), dl)
	}
	_ = tw.Flush()
	for _, r := range rep.Routes {
		printReplicas(w, r)
		printOrdered(w, r)
	}
	printUncaptured(w, rep.Uncaptured)
	printDeadLetterSummary(w, rep.DeadLetter)
}

func pausedText(r inspect.RouteStatus) string {
	switch {
	case r.PausedBy == routestatus.PausedByRouteHealth:
		return "route health, probing (until " + r.PauseUntil.Format(time.RFC3339) + ")"
	case r.Paused:
		return "by an operator, until " + r.PauseUntil.Format(time.RFC3339)
	}
	return "no"
}

// healthText sums up the replicas' answers: "healthy (2 replicas)",
// "outage on 1 of 2 replicas", "unknown (no replica answered)".
func healthText(r inspect.RouteStatus) string {
	var answered, healthy int
	conditions := map[string]int{}
	for _, a := range r.Replicas {
		if a.Status == nil {
			continue
		}
		answered++
		if h := a.Status.Health; h == "healthy" {
			healthy++
		} else {
			conditions[h]++
		}
	}
	switch {
	case answered == 0:
		return "unknown (no replica answered)"
	case healthy == answered:
		return "healthy (" + plural(answered, "replica", "replicas") + ")" + agentsText(r)
	}
	names := make([]string, 0, len(conditions))
	for c := range conditions {
		names = append(names, c)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, c := range names {
		parts[i] = fmt.Sprintf("%s on %d of %d", c, conditions[c], answered)
	}
	return strings.Join(parts, ", ") + agentsText(r)
}

// agentsText adds, for a route that serves many agents, how many of them
// the replicas hold stopped (the most any one replica does: each replica
// judges its agents on its own).
func agentsText(r inspect.RouteStatus) string {
	most := 0
	for _, a := range r.Replicas {
		if a.Status != nil {
			most = max(most, a.Status.AgentsStopped)
		}
	}
	if most == 0 {
		return ""
	}
	return "; " + plural(most, "agent", "agents") + " stopped"
}

// printReplicas says, for a route, each replica that holds it stopped and
// why, each answer refused or in error, and who did not answer.
func printReplicas(w io.Writer, r inspect.RouteStatus) {
	var lines []string
	for _, a := range r.Replicas {
		switch {
		case a.Refused != "":
			lines = append(lines, fmt.Sprintf("answer refused, from %s: %s", replicaText(a.Replica), a.Refused))
		case a.Error != "":
			lines = append(lines, fmt.Sprintf("%s answered an error: %s", replicaText(a.Replica), a.Error))
		case a.Status != nil && (a.Status.Health != "healthy" || a.Status.PausedBy != ""):
			lines = append(lines, fmt.Sprintf("%s on %s", inspect.ConditionText(a.Status), replicaText(a.Replica)))
		}
		lines = append(lines, stoppedAgentsLines(a)...)
	}
	if len(r.Silent) > 0 {
		lines = append(lines, fmt.Sprintf("%s did not answer in time: %s", plural(len(r.Silent), "replica", "replicas"), strings.Join(r.Silent, ", ")))
	}
	if r.Unanswered != "" && r.Problem == "" {
		lines = append(lines, r.Unanswered)
	}
	if len(lines) == 0 {
		return
	}
	printf(w, "\nroute %s:\n", r.Route)
	for _, l := range lines {
		printf(w, "  %s\n", l)
	}
}

// stoppedAgentsLines lists the agents a replica holds stopped on a route
// that serves many: each with its condition, the call that stopped it and
// its next probe (the runbook's "Agent stopped" reads these).
func stoppedAgentsLines(a inspect.ReplicaAnswer) []string {
	if a.Status == nil || a.Status.AgentsStopped == 0 {
		return nil
	}
	st := a.Status
	lines := []string{fmt.Sprintf("stopped agents on %s: %d", replicaText(a.Replica), st.AgentsStopped)}
	for i := range st.Agents {
		lines = append(lines, "  "+inspect.AgentConditionText(&st.Agents[i]))
	}
	if more := st.AgentsStopped - len(st.Agents); more > 0 {
		lines = append(lines, fmt.Sprintf("  ... and %s (a replica lists the %d stopped longest; agentrelay_agent_stopped names them all)",
			plural(more, "more", "more"), routestatus.MaxAgentsListed))
	}
	return lines
}

// replicaText names a replica by what it says of itself.
func replicaText(r routestatus.Replica) string {
	parts := []string{"replica " + r.ID}
	if r.Host != "" {
		parts = append(parts, "host "+r.Host)
	}
	if r.Name != "" {
		parts = append(parts, "connection "+r.Name)
	}
	if r.ClientID != 0 {
		parts = append(parts, fmt.Sprintf("client id %d", r.ClientID))
	}
	return parts[0] + " (" + strings.Join(parts[1:], ", ") + ")"
}

func printOrdered(w io.Writer, r inspect.RouteStatus) {
	switch {
	case r.Ordering == "":
	case r.Owner != "":
		printf(w, "\nroute %s is ordered by %s: one replica owns it (pinned client %s), the others stand by\n", r.Route, r.Ordering, r.Owner)
		printOwnerHolds(w, r)
	default:
		printf(w, "\nroute %s is ordered by %s: no replica owns it now\n", r.Route, r.Ordering)
	}
}

func printUncaptured(w io.Writer, streams []inspect.UncapturedStream) {
	for _, u := range streams {
		if u.Capped {
			printf(w, "\nstream %s: %s hold messages, more than the %d status reads: not checked for subjects no route captures\n",
				u.Stream, plural(int(u.SubjectsInStream), "subject", "subjects"), inspect.MaxStatusSubjects)
			continue
		}
		printf(w, "\nstream %s: %s on subjects no route captures (nothing will trigger an agent for them):\n", u.Stream, plural(int(u.Messages), "message", "messages"))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for i, sc := range u.Subjects {
			if i == maxUncapturedListed {
				printf(tw, "  ... and %s (see --json)\n", plural(len(u.Subjects)-i, "more subject", "more subjects"))
				break
			}
			printf(tw, "  %s\t%d\n", sc.Subject, sc.Messages)
		}
		_ = tw.Flush()
	}
}

func printDeadLetterSummary(w io.Writer, d inspect.DeadLetterSummary) {
	if !d.Exists {
		printf(w, "\ndead-letter stream %s: not created yet (nothing dead-lettered)\n", d.Stream)
		return
	}
	printf(w, "\ndead-letter stream %s: %s, %s", d.Stream, plural(int(d.Messages), "message", "messages"), plural(int(d.Bytes), "byte", "bytes"))
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

// maxKeyShown bounds a conversation key in the text output (--json has it
// whole).
const maxKeyShown = 64

// printOwnerHolds prints what the owner of an ordered route holds: its
// blocked keys, the longest waiting first.
func printOwnerHolds(w io.Writer, r inspect.RouteStatus) {
	h := r.OwnerHolds
	if h == nil {
		printf(w, "  blocked keys unknown: %s\n", r.OwnerUnanswered)
		return
	}
	if h.Fenced {
		printf(w, "  fenced: it took the route over and waits for the previous owner's events to be settled or redelivered before it starts any\n")
	}
	printf(w, "  holding %s, %d being handled; %s blocked\n", plural(h.Holding, "event", "events"), h.Running, plural(h.BlockedKeys, "key", "keys"))
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
		printf(w, "  ... and %s (--blocked-keys lists up to %d)\n", plural(more, "more blocked key", "more blocked keys"), routestatus.MaxBlockedKeys)
	}
}
