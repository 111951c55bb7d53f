package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// badConfig writes a file with problems of every kind: what does not
// decode (a bad duration, an unknown field, a value of the wrong kind),
// what does not validate, and a token that cannot be read.
func badConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bad.yaml")
	y := `api: {timeout: soon}
defaults: {max_in_flit: 3}
routes:
  - name: a
    stream: S
    trigger_id: agtch_a
    token: {env: AGENTRELAY_TEST_UNSET_TOKEN}
    max_in_flight: many
  - {name: b, stream: S, trigger_id: nope, token: {env: AGENTRELAY_TEST_UNSET_TOKEN}}
`
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The problems of badConfig, in order.
var badConfigProblems = []string{
	"config: 6 problems:",
	`api.timeout: invalid duration "soon"`,
	"defaults.max_in_flit: unknown field (did you mean max_in_flight?) at line 2",
	`routes[0].max_in_flight: want a whole number, got "many" at line 8`,
	"routes[1].trigger_id: invalid trigger id",
	"routes[0].token.env: environment variable AGENTRELAY_TEST_UNSET_TOKEN is not set",
	"routes[1].token.env: environment variable AGENTRELAY_TEST_UNSET_TOKEN is not set",
}

func wantProblems(t *testing.T, what string, code int, errOut string, want []string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != ExitConfig || len(lines) != len(want) {
		t.Fatalf("%s: exit %d, want %d, with %d lines:\n%s", what, code, ExitConfig, len(want), errOut)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("%s: line %d = %q, want %q", what, i, lines[i], w)
		}
	}
}

// config check finds the file as every other command does: the argument,
// else --config (-c), else $AGENTRELAY_CONFIG. Every problem is listed in
// one run, whatever its kind.
func TestConfigCheckFindsTheFileAsEveryCommandDoes(t *testing.T) {
	bad := badConfig(t)
	os.Unsetenv("AGENTRELAY_TEST_UNSET_TOKEN")
	code, _, want := runCLI(t, "", "config", "check", bad)
	wantProblems(t, "config check FILE", code, want, badConfigProblems)
	for _, args := range [][]string{{"-c", bad}, {"--config", bad}, {"--config", bad, bad}} {
		code, _, errOut := runCLI(t, "", append([]string{"config", "check"}, args...)...)
		if code != ExitConfig || errOut != want {
			t.Errorf("config check %v: exit %d:\n%s\nwant as with the file as argument", args, code, errOut)
		}
	}
	t.Setenv("AGENTRELAY_CONFIG", bad)
	if code, _, errOut := runCLI(t, "", "config", "check"); code != ExitConfig || errOut != want {
		t.Errorf("config check with $AGENTRELAY_CONFIG: exit %d:\n%s", code, errOut)
	}
	good := filepath.Join(t.TempDir(), "good.yaml")
	if err := os.WriteFile(good, []byte("routes: [{name: a, stream: S, trigger_id: agtch_a, token: {env: X}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, "", "config", "check", "--skip-tokens", "-c", good); code != 0 || !strings.HasPrefix(out, good+": ok (1 routes") {
		t.Errorf("-c beats $AGENTRELAY_CONFIG: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, "", "config", "check", "-c", good, bad); code != ExitConfig || !strings.Contains(errOut, "give one") {
		t.Errorf("two different files: exit %d %q", code, errOut)
	}
}

// run and config check read a file through the same code: on the same bad
// file they list the same problems, the agent tokens included.
func TestRunAndConfigCheckListTheSameProblems(t *testing.T) {
	t.Parallel()
	bad := badConfig(t)
	os.Unsetenv("AGENTRELAY_TEST_UNSET_TOKEN")
	_, _, check := runCLI(t, "", "config", "check", bad)
	code, _, run := runCLI(t, "", "run", "-c", bad)
	wantProblems(t, "run", code, run, badConfigProblems)
	if run != check {
		t.Errorf("run says:\n%s\nconfig check says:\n%s", run, check)
	}
}
