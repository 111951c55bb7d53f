package cli

import (
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/spf13/cobra"
)

const (
	runbookPath = "../../docs/runbook.md"
	alertsPath  = "../../deploy/kubernetes/components/monitoring/prometheusrule.yaml"
)

// runbookSections returns the sections of docs/runbook.md, by the anchor of
// each "## " heading.
func runbookSections(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(runbookPath)
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	parts := strings.Split(string(b), "\n## ")
	for _, p := range parts[1:] {
		heading, body, _ := strings.Cut(p, "\n")
		sections[anchor(heading)] = body
	}
	return sections
}

// anchor is the anchor GitHub gives a heading: lower case, punctuation
// dropped, spaces as hyphens.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

var (
	alertRE     = regexp.MustCompile(`(?m)^\s*- alert: (\S+)`)
	runbookRE   = regexp.MustCompile(`(?m)^\s*runbook_url: \S*#(\S+)`)
	inlineCmdRE = regexp.MustCompile("`(agentrelay [^`]+)`")
)

// quotedCommands returns the agentrelay command lines a runbook text
// quotes: in `code spans` and as lines of ```sh blocks.
func quotedCommands(text string) []string {
	var cmds []string
	inSh := false
	for _, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "```sh"):
			inSh = true
			continue
		case strings.HasPrefix(l, "```"):
			inSh = false
			continue
		case inSh:
			if strings.HasPrefix(l, "agentrelay ") {
				cmds = append(cmds, l)
			}
			continue
		}
	}
	// Code spans may wrap over a line break in the Markdown source.
	for _, m := range inlineCmdRE.FindAllStringSubmatch(strings.ReplaceAll(text, "\n", " "), -1) {
		cmds = append(cmds, m[1])
	}
	return cmds
}

// checkCommand reports what is wrong with a quoted command line: an unknown
// subcommand, or a flag its command does not have.
func checkCommand(root *cobra.Command, line string) string {
	var args []string
	for _, f := range strings.Fields(line)[1:] {
		if f == "#" || f == "|" || f == ">" || strings.HasPrefix(f, ">") || f == "…" || f == "..." {
			break
		}
		args = append(args, f)
	}
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err.Error()
	}
	if cmd == root || (!cmd.Runnable() && len(cmd.Commands()) > 0) {
		return "names no command that runs"
	}
	for _, a := range rest {
		name, isFlag := strings.CutPrefix(a, "--")
		if !isFlag {
			if short, ok := strings.CutPrefix(a, "-"); ok && len(short) == 1 && cmd.Flags().ShorthandLookup(short) == nil {
				return "unknown flag " + a + " of " + cmd.CommandPath()
			}
			continue
		}
		name, _, _ = strings.Cut(name, "=")
		if cmd.Flags().Lookup(name) == nil && cmd.InheritedFlags().Lookup(name) == nil {
			return "unknown flag --" + name + " of " + cmd.CommandPath()
		}
	}
	return ""
}

// The runbook (docs/runbook.md) walks each alert to its cause with agentrelay's own
// commands: every alert of the PrometheusRule links a runbook section, the
// section quotes at least one agentrelay command, and every command the
// runbook quotes exists, with the flags it is given.
func TestRunbookWalksEveryAlertWithRealCommands(t *testing.T) {
	t.Parallel()
	rules, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	alerts, anchors := alertRE.FindAllStringSubmatch(string(rules), -1), runbookRE.FindAllStringSubmatch(string(rules), -1)
	if len(alerts) == 0 || len(alerts) != len(anchors) {
		t.Fatalf("%d alerts, %d runbook_url annotations in %s", len(alerts), len(anchors), alertsPath)
	}
	sections := runbookSections(t)
	for i, a := range alerts {
		name, anchor := a[1], anchors[i][1]
		body, ok := sections[anchor]
		if !ok {
			t.Errorf("alert %s: runbook #%s is not a section of %s", name, anchor, runbookPath)
			continue
		}
		if !strings.Contains(body, name) {
			t.Errorf("alert %s: its runbook #%s does not name the alert", name, anchor)
		}
		if len(quotedCommands(body)) == 0 {
			t.Errorf("alert %s: its runbook #%s quotes no agentrelay command", name, anchor)
		}
	}

	root := newRoot(context.Background(), &env{stdout: io.Discard, stderr: io.Discard, stdin: strings.NewReader(""), getenv: os.Getenv, lookupEnv: os.LookupEnv})
	checked := 0
	for anchor, body := range sections {
		for _, c := range quotedCommands(body) {
			checked++
			if problem := checkCommand(root, c); problem != "" {
				t.Errorf("runbook #%s quotes %q: %s", anchor, c, problem)
			}
		}
	}
	for _, bad := range []string{"agentrelay dlq lsit", "agentrelay status --wacth 2s", "agentrelay dlq", "agentrelay dlq show 1 -q"} {
		if checkCommand(root, bad) == "" {
			t.Errorf("the check passes %q", bad)
		}
	}
	if checked < 20 {
		t.Errorf("only %d commands quoted in the runbook", checked)
	}
}
