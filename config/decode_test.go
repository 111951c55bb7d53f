package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/config"
)

// Everything wrong with a file is listed in one run, whatever kind of
// problem it is: unknown fields, durations, shares and numbers that do not
// parse, values of the wrong kind, keys set twice, and the validation
// problems of what did decode. Each names the field's path, and the line
// for what the YAML says.
func TestEveryProblemOfAFileIsListedInOneRun(t *testing.T) {
	_, err := read(t, `
api:
  timeout: soon
  max_conns: many
log: {accepted: often}
worker: {drain_grace: 20 seconds, pull_expiry: [5s]}
defaults: {max_in_flit: 3, breaker: {min_calls: -1}}
routes:
  - name: complaints
    stream: EVENTS
    trigger_id: agtch complaints
    token: sk-live-SECRET-TOKEN
    subjects: events.complaints
    max_in_flight: 1.5
  - name: other
    stream: EVENTS
    trigger_id: agtch_other
    token: {env: T}
    ack_wait: 30s
    ack_wait: 40s
`, nil)
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	want := []string{
		`api.timeout: invalid duration "soon": want a duration such as 30s, 5m or 14d at line 3`,
		`api.max_conns: want a whole number, got "many" at line 4`,
		`log.accepted: invalid share "often": want true, false or a share from 0 to 1 at line 5`,
		`worker.drain_grace: invalid duration "20 seconds": want a duration such as 30s, 5m or 14d at line 6`,
		`worker.pull_expiry: want a duration such as 30s, 5m or 14d at line 6`,
		`defaults.max_in_flit: unknown field (did you mean max_in_flight?) at line 7`,
		`defaults.breaker.min_calls: want a whole number from 0 to 4294967295, got "-1" at line 7`,
		`routes[0].token: want {file: PATH} or {env: VARIABLE}, got a single value (the token itself does not go in this file) at line 12`,
		`routes[0].subjects: want a list, got a single value at line 13`,
		`routes[0].max_in_flight: want a whole number, got "1.5" at line 14`,
		`routes[1].ack_wait: set twice, at lines 19 and 20`,
		// Validation, of what did decode.
		`routes[0].trigger_id: `,
	}
	if got := ce.Problems; len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(got), len(want), err)
	}
	for i, w := range want {
		if i >= len(ce.Problems) || !strings.HasPrefix(ce.Problems[i], w) {
			t.Errorf("problem %d: want %q", i, w)
		}
	}
	if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "config.") {
		t.Errorf("the token, or Go's names for types, in:\n%s", err)
	}
}

// A field that did not decode is zero, which validation would refuse as
// well ("required", "set file or env"); that says the same thing twice, so
// only the decoding problem is listed. A misspelt field's suggestion stands
// for the field it names. A mapping with a key set twice is not decoded at
// all, so its own problems are the only ones.
func TestAProblemIsNotListedTwiceUnderTwoNames(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"wrong kind", "routes:\n  - {name: a, stream: S, trigger_id: [agtch_a], token: {env: T}}\n",
			"routes[0].trigger_id: want a single value, got a list at line 2"},
		{"token not a mapping", "routes:\n  - {name: a, stream: S, trigger_id: agtch_a, token: abc}\n",
			"routes[0].token: want {file: PATH} or {env: VARIABLE}, got a single value (the token itself does not go in this file) at line 2"},
		{"misspelt", "routes:\n  - {name: a, stream: S, trigger_idd: agtch_a, token: {env: T}}\n",
			"routes[0].trigger_idd: unknown field (did you mean trigger_id?) at line 2"},
		{"key set twice", "routes:\n  - {name: a, name: b, stream: S, trigger_id: agtch_a, token: {env: T}}\n",
			"routes[0].name: set twice, at lines 2 and 2"},
		{"not a mapping", "[routes]\n", "(top level): want a mapping of settings, got a list at line 1"},
	} {
		_, err := read(t, c.yaml, nil)
		var ce *config.Error
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0] != c.want {
			t.Errorf("%s: want only %q, got %v", c.name, c.want, err)
		}
	}
}

// Parse, without validation, lists the decoding problems of Read.
func TestParseListsEveryDecodingProblem(t *testing.T) {
	_, err := config.Parse([]byte("api: {timeout: soon, max_conns: many}\nbogus: 1\n"))
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
}

// A route that does not decode at all still counts: the YAML library would
// drop it from the list, and the next route's problems would be reported
// under its index.
func TestProblemsKeepTheirRouteIndex(t *testing.T) {
	_, err := read(t, `
routes:
  - just-a-name
  - {name: a, name: a2, stream: S, trigger_id: agtch_a, token: {env: T}}
  - {name: b, stream: S, trigger_id: bad, token: {env: T}}
`, nil)
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
	for i, w := range []string{
		"routes[0]: want a mapping of settings, got a single value at line 3",
		"routes[1].name: set twice, at lines 4 and 4",
		"routes[2].trigger_id: invalid trigger id",
	} {
		if !strings.HasPrefix(ce.Problems[i], w) {
			t.Errorf("problem %d = %q, want %q", i, ce.Problems[i], w)
		}
	}
}
