package deadletter

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/internal/subject"
)

// headerNames are every header name of the format.
var headerNames = []string{
	HeaderReason, HeaderClass, HeaderStatus, HeaderError, HeaderRoute, HeaderTriggerID, HeaderStream,
	HeaderSequence, HeaderSubject, HeaderStoredAt, HeaderAttempts, HeaderDeadLetteredAt, HeaderOrderedKey,
	HeaderNextSequence, HeaderLetterForm, HeaderBodySize, HeaderBodySHA256, HeaderBodyOmitted,
	HeaderDroppedHeaders, HeaderTruncatedHeaders, HeaderRefusal, HeaderReplayOf, HeaderReplayOrigin, HeaderReplayCount, HeaderReplayAttempts, HeaderReplayBody,
}

// namesHeader reports whether a string literal spells a dead-letter header
// name in code: one of headerNames in any case, or anything starting with
// the canonical "Agentrelay-" (a name built from a prefix; the lower-case
// "agentrelay-" starts durable consumer names). Prose that mentions a
// header in a help text is not code.
func namesHeader(v string) bool {
	for _, n := range headerNames {
		if strings.EqualFold(v, n) {
			return true
		}
	}
	return strings.HasPrefix(v, HeaderPrefix)
}

// This package owns the dead-letter headers: no other non-test Go file of
// the module spells one of their names (or their prefix) as a string
// literal. It names them through the constants here, so a writer and a
// reader cannot drift apart.
func TestNoHeaderNameOutsideThisPackage(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && (path == here || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor"):
			return filepath.SkipDir
		case d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go"):
			return nil
		}
		files++
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if v, err := strconv.Unquote(lit.Value); err == nil && namesHeader(v) {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s: the literal %q names a dead-letter header: use internal/deadletter's constant", rel, v)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{`agentrelay-reason`, `Agentrelay-Original-Nats-Msg-Id`, "Agentrelay-"} {
		if !namesHeader(v) {
			t.Errorf("%q is not recognised as a header name", v)
		}
	}
	if files < 50 {
		t.Fatalf("walked %d Go files from %s: not the module", files, root)
	}
}

// A dead-letter subject is a pure function of the prefix and the original,
// literal, bounded, and unique to the original.
func TestSubject(t *testing.T) {
	t.Parallel()
	if got := Subject(dlPrefix, "ev.ok.a"); got != "agentrelay.dlq.ev.ok.a" {
		t.Errorf("short subject: %s", got)
	}
	long := "ev.ok." + strings.Repeat("b", 4034)
	if got := Subject(dlPrefix, long); !strings.HasPrefix(got, dlPrefix+".ev.ok.sha256-") || len(got) > MaxSubjectLen {
		t.Errorf("long subject: %q", got)
	}
	if got := Subject("ops.dead", "ev.*.x"); !strings.HasPrefix(got, "ops.dead.ev.sha256-") {
		t.Errorf("wildcard: %q", got)
	}
}

// `dlq list --subject P` asks the server for SubjectFilter(prefix, P): for
// every original subject P matches, the letter's subject lies in that
// filter, shortened or not.
func TestSubjectFilterHoldsEveryLetterThePatternMatches(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("b", 2000)
	originals := []string{
		"agents.complaints.new",
		"agents.complaints." + long,
		"agents." + long + ".new",
		"agents.a b.new",
		"agents..new",
		long + ".agents",
		strings.Repeat("t.", 600) + "end",
		"other.x",
	}
	patterns := []string{
		"agents.complaints.new", "agents.complaints." + long, "agents.a b.new",
		"agents.>", "agents.*.new", "agents.complaints.*", "*.complaints.>", ">", "*.*.*",
		"t.t.t.>", strings.Repeat("t.", 600) + "end",
	}
	for _, p := range patterns {
		filter := SubjectFilter(dlPrefix, p)
		if len(filter) > MaxSubjectLen+2 {
			t.Errorf("%.40q: filter of %d bytes", p, len(filter))
		}
		for _, o := range originals {
			if subject.Matches(p, o) && !subject.Matches(filter, Subject(dlPrefix, o)) {
				t.Errorf("pattern %.60q matches %.60q, but filter %.80q misses its letter %.80q", p, o, filter, Subject(dlPrefix, o))
			}
		}
	}
	// Literal patterns are exact, and a pattern that is only literal
	// tokens before ">" stays what it was.
	for p, want := range map[string]string{
		"agents.complaints.new": dlPrefix + ".agents.complaints.new",
		"agents.>":              dlPrefix + ".agents.>",
		"agents.*.new":          dlPrefix + ".agents.>",
		">":                     dlPrefix + ".>",
	} {
		if got := SubjectFilter(dlPrefix, p); got != want {
			t.Errorf("SubjectFilter(%q) = %q, want %q", p, got, want)
		}
	}
}
