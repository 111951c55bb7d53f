package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "agentrelay ") || !strings.Contains(out, "revision ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	// The example's token file does not exist here: config check refuses
	// it as run would, unless told to leave the tokens out.
	code, out, errOut := runCLI(t, "", "config", "check", "../../config/example.yaml")
	if code != ExitConfig || !strings.Contains(errOut, "routes[0].token.file: open /var/run/secrets/agentrelay/complaints-token") {
		t.Errorf("example without its token file: %d %q %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, "", "config", "check", "--skip-tokens", "../../config/example.yaml")
	if code != 0 || !strings.Contains(out, "ok (1 routes") || !strings.Contains(out, "tokens not checked") {
		t.Errorf("example, tokens skipped: %d %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("routes:\n  - name: x\n    stream: S\n    trigger_id: nope\n    token: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, "", "config", "check", bad)
	if code != ExitConfig || !strings.Contains(errOut, "routes[0].trigger_id") || !strings.Contains(errOut, "routes[0].token") {
		t.Errorf("bad config: %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "", "config", "check", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != ExitConfig || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: %d %q", code, errOut)
	}
}

func TestRunRefusesBadConfigListingEveryProblem(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("defaults: {ack_wait: 10ms}\nroutes:\n  - {name: a, stream: S, trigger_id: agtch_a, token: {env: X}}\n  - {name: a, stream: S, trigger_id: agtch_b, token: {env: X}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI(t, "", "run", "--config", bad)
	if code != ExitConfig || !strings.Contains(errOut, "6 problems") || !strings.Contains(errOut, "routes[0].ack_wait") ||
		!strings.Contains(errOut, "routes[1].ack_wait") || !strings.Contains(errOut, `routes[1].name: "a" is also the name of route 0`) {
		t.Errorf("run with bad config: %d %q", code, errOut)
	}
}

func TestUnknownFlagIsAUsageError(t *testing.T) {
	t.Parallel()
	code, _, errOut := runCLI(t, "", "version", "--bogus")
	if code != ExitConfig || !strings.Contains(errOut, "unknown flag") {
		t.Errorf("%d %q", code, errOut)
	}
}

func TestParseTimes(t *testing.T) {
	t.Parallel()
	now := mustTime(t, "2026-11-28T12:00:00Z")
	if got, _ := parseTime("2h", now); !got.Equal(mustTime(t, "2026-11-28T10:00:00Z")) {
		t.Errorf("2h ago = %v", got)
	}
	if got, _ := parseFuture("30m", now); !got.Equal(mustTime(t, "2026-11-28T12:30:00Z")) {
		t.Errorf("30m from now = %v", got)
	}
	if _, err := parseFuture("2026-11-28T11:00:00Z", now); err == nil {
		t.Error("a pause until the past was accepted")
	}
	if got, _ := parseTime("2026-11-27", now); !got.Equal(mustTime(t, "2026-11-27T00:00:00Z")) {
		t.Errorf("date = %v", got)
	}
}
