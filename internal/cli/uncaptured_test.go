package cli

import (
	"strings"
	"testing"
)

// A subject no route captures is stored all the same, but nothing will
// ever trigger an agent for it: with a configuration at hand, publish says
// so on stderr, naming the routes that read the stream.
func TestPublishWarnsOfASubjectNoRouteCaptures(t *testing.T) {
	s := newStack(t)
	s.startWorker() // creates the stream WORK (work.>)

	code, out, errOut := s.cli("", "publish", "work.ok.x", "--input", "fine")
	if code != 0 || !strings.Contains(out, "stream WORK sequence 1") || errOut != "" {
		t.Fatalf("captured subject: %d %q %q", code, out, errOut)
	}

	code, out, errOut = s.cli("", "publish", "work.okk.x", "--input", "typo", "-n", "2")
	if code != 0 || !strings.Contains(out, "sequence 3") {
		t.Fatalf("uncaptured subject is still published: %d %q %q", code, out, errOut)
	}
	for _, want := range []string{
		"warning: no route of the configuration captures work.okk.x",
		"routes on stream WORK: ok [work.ok.>], locked [work.locked.>]",
		"no agent will be triggered",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not say %q", errOut, want)
		}
	}
	if n := strings.Count(errOut, "warning:"); n != 1 {
		t.Errorf("%d warnings for one command, want 1: %q", n, errOut)
	}

	// What the warning repeats comes from the command line: it is
	// sanitised like everything the CLI prints.
	_, _, errOut = s.cli("", "publish", "work.\x1b]0;pwned\x07", "--input", "x")
	if !strings.Contains(errOut, "warning: no route") || strings.ContainsAny(errOut, "\x1b\x07") {
		t.Errorf("hostile subject: stderr %q", errOut)
	}

	// Without a configuration there is nothing to compare with: no warning.
	code, _, errOut = runCLI(t, "", "publish", "-s", s.nats.Server.ClientURL(), "work.okk.y", "--input", "x")
	if code != 0 || errOut != "" {
		t.Errorf("without a configuration: %d %q", code, errOut)
	}
}
