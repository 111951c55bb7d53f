package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
)

// A URL quoted in a configuration error never shows its user info or its
// query, wherever it comes from (the file or the environment) and whether
// url.Parse can read it or not.
func TestConfigErrorsRedactURLs(t *testing.T) {
	for _, r := range []struct {
		yaml, path string
		env        map[string]string
		secrets    []string
	}{
		{yaml: `api: {base_url: "ftp://user:SECRETPW1@host"}`, path: "api.base_url", secrets: []string{"SECRETPW1"}},
		{yaml: `api: {base_url: "https://api.example.com/v1?token=SECRETQ2"}`, path: "api.base_url", secrets: []string{"SECRETQ2"}},
		{yaml: `api: {base_url: "https://u:SECRET3@api.example.com/x"}`, path: "api.base_url", secrets: []string{"SECRET3"}},
		{yaml: `api: {base_url: "https://u:pa/SECRET4@api.example.com"}`, path: "api.base_url", secrets: []string{"SECRET4", ":pa"}},
		{yaml: `nats: {url: "nats://user:SEC%zzRETN7@host:4222"}`, path: "nats.url", secrets: []string{"RETN7", "SEC%zz", "%zz"}},
		{yaml: `nats: {url: "nats://user:pa/SECRET5@host:4222"}`, path: "nats.url", secrets: []string{"SECRET5", ":pa"}},
		{yaml: `nats: {url: "nats://a:SECRET6@h1:4222,,nats://h2"}`, path: "nats.url", secrets: []string{"SECRET6"}},
		{yaml: `nats: {url: "ftp://a:SECRET7@h1:4222?x=SECRET8"}`, path: "nats.url", secrets: []string{"SECRET7", "SECRET8"}},
		{env: map[string]string{config.EnvNATSURL: "nats://u:SEC%zzRET9@h"}, path: "nats.url", secrets: []string{"RET9", "SEC%zz"}},
		{env: map[string]string{config.EnvAPIBaseURL: "http://u:SECRET10@api.example.com"}, path: "api.base_url", secrets: []string{"SECRET10"}},
		{yaml: `metrics: {listen: "http://u:SECRET11@h:1"}`, path: "metrics.listen", secrets: []string{"SECRET11"}},
		{yaml: `api: {timeout: "https://u:SECRET12@h?t=SECRET13"}`, path: "line 1", secrets: []string{"SECRET12", "SECRET13"}},
		{yaml: `"https://u:SECRET14@h": 1`, path: `["https://REDACTED@h"]: unknown field`, secrets: []string{"SECRET14"}},
	} {
		_, err := read(t, r.yaml+"\n"+minimal, r.env)
		var ce *config.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), r.path) {
			t.Errorf("%s %v: want a problem at %s, got %v", r.yaml, r.env, r.path, err)
			continue
		}
		for _, s := range r.secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s %v: the error shows %q: %v", r.yaml, r.env, s, err)
			}
		}
		if strings.Contains(err.Error(), "://") && !strings.Contains(err.Error(), "REDACTED") {
			t.Errorf("%s %v: nothing redacted (is the URL quoted at all?): %v", r.yaml, r.env, err)
		}
	}
}

// A file over the size limit is an error naming the limit and the file's
// size, never read in part: what lies past the cut (here a route and the
// metrics listener) would be dropped without a word.
func TestConfigOverTheSizeLimitIsAnError(t *testing.T) {
	head := minimal + "#" + strings.Repeat("x", config.MaxFileSize) + "\n"
	tail := "  - {name: second, stream: EVENTS, trigger_id: agtch_second, token: {env: T}}\nmetrics: {listen: \"127.0.0.1:1\"}\n"
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte(head+tail), 0o600); err != nil {
		t.Fatal(err)
	}
	size := fmt.Sprint(len(head + tail))
	_, err := config.Load(path)
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "4194304") || !strings.Contains(err.Error(), size) {
		t.Errorf("Load of a %s-byte file: %v; want an error naming the limit and the size", size, err)
	}
	_, err = read(t, head+tail, nil)
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "4194304") {
		t.Errorf("Read of a %s-byte stream: %v; want an error naming the limit", size, err)
	}
	// Up to the limit, all of it is read.
	exact := minimal + "#" + strings.Repeat("x", config.MaxFileSize-len(minimal)-len(tail)-2) + "\n" + tail
	if len(exact) != config.MaxFileSize {
		t.Fatalf("test file is %d bytes", len(exact))
	}
	c, err := read(t, exact, map[string]string{})
	if err != nil || len(c.Routes) != 2 || c.Metrics.Listen != "127.0.0.1:1" {
		t.Errorf("a file of exactly the limit: %v", err)
	}
}

// An unknown field is named by its path in the file, with the field it most
// resembles, not in the Go terms of the YAML library.
func TestUnknownFieldsAreNamedInYAMLTermsWithASuggestion(t *testing.T) {
	_, err := read(t, `
bogus: 1
defaults: {max_in_flit: 3}
api:
  tls: {insecureSkipVerify: true}
routes:
  - name: complaints
    stream: EVENTS
    trigger_id: agtch_complaints_123
    token: {file: /t, enve: X}
    max_in_flit: 5
    retry: {max_attemps: 4}
  - &b
    name: other
    stream: EVENTS
    trigger_id: agtch_other
    token: {env: T}
    "we ird": 1
  - <<: *b
    name: third
    MaxInFlight: 2
`, nil)
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	want := []string{
		"bogus: unknown field at line 2",
		"defaults.max_in_flit: unknown field (did you mean max_in_flight?) at line 3",
		"api.tls.insecureSkipVerify: unknown field (did you mean insecure_skip_verify?) at line 5",
		"routes[0].token.enve: unknown field (did you mean env?) at line 10",
		"routes[0].max_in_flit: unknown field (did you mean max_in_flight?) at line 11",
		"routes[0].retry.max_attemps: unknown field (did you mean max_attempts?) at line 12",
		`routes[1]["we ird"]: unknown field at line 18`,
		"routes[2].MaxInFlight: unknown field (did you mean max_in_flight?) at line 21",
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing problem %q", w)
		}
	}
	if len(ce.Problems) != len(want) || strings.Contains(err.Error(), "not found in type") {
		t.Errorf("got %d problems, want %d, in YAML terms:\n%s", len(ce.Problems), len(want), err)
	}
}

// `config check` refuses what `run` refuses: a route whose token run cannot
// read at start is a problem for Check too, and every such problem is listed
// at once, with the path of its field, alongside the other problems. The
// token itself never appears.
func TestCheckRefusesTheTokensRunRefuses(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, empty, twoLines := file("good", "SECRET-TOKEN-1\n"), file("empty", " \n"), file("two", "SECRET-A\nSECRET-B\n")
	big := file("big", strings.Repeat("x", 65<<10))
	tokens := []struct{ kind, value string }{
		{"env", "AGENTRELAY_TEST_UNSET"}, {"env", "AGENTRELAY_TEST_EMPTY"}, {"env", "AGENTRELAY_TEST_TWO_LINES"},
		{"env", "AGENTRELAY_TEST_GOOD"}, {"file", filepath.Join(dir, "missing")}, {"file", dir}, {"file", empty},
		{"file", twoLines}, {"file", big}, {"file", good},
	}
	t.Setenv("AGENTRELAY_TEST_EMPTY", "  ")
	t.Setenv("AGENTRELAY_TEST_TWO_LINES", "SECRET-C\nSECRET-D")
	t.Setenv("AGENTRELAY_TEST_GOOD", "SECRET-TOKEN-2")
	os.Unsetenv("AGENTRELAY_TEST_UNSET")
	var y strings.Builder
	y.WriteString("routes:\n")
	for i, tok := range tokens {
		fmt.Fprintf(&y, "  - {name: r%d, stream: EVENTS, trigger_id: agtch_r%d, token: {%s: %q}}\n", i, i, tok.kind, tok.value)
	}
	y.WriteString("  - {name: bad, stream: EVENTS, trigger_id: nope, token: {env: AGENTRELAY_TEST_UNSET}}\n")

	// Read, for the commands that do not call the agent, does not look.
	c, err := config.Read(strings.NewReader(strings.Replace(y.String(), "trigger_id: nope", "trigger_id: agtch_ok", 1)), os.LookupEnv)
	if err != nil {
		t.Fatalf("Read looked at the tokens: %v", err)
	}
	_, err = config.Check(strings.NewReader(y.String()), os.LookupEnv)
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("Check: want *config.Error, got %v", err)
	}
	msg := err.Error()
	for i, tok := range tokens {
		path := fmt.Sprintf("routes[%d].token.%s: ", i, tok.kind)
		_, runErr := app.TokenSource(c.Routes[i].Token)
		if got := strings.Contains(msg, path); got != (runErr != nil) {
			t.Errorf("%s %s: run says %v, config check reports it: %v", tok.kind, tok.value, runErr, got)
		}
	}
	for _, w := range []string{
		"routes[0].token.env: environment variable AGENTRELAY_TEST_UNSET is not set",
		"routes[1].token.env: environment variable AGENTRELAY_TEST_EMPTY is empty",
		"routes[2].token.env: environment variable AGENTRELAY_TEST_TWO_LINES: byte not allowed in an HTTP header field value: line feed (0x0a) at offset 8",
		"routes[4].token.file: open " + filepath.Join(dir, "missing") + ": no such file or directory",
		"routes[5].token.file: reading " + dir,
		"routes[6].token.file: " + empty + " is empty",
		"routes[10].trigger_id", "routes[10].token.env",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
	if len(ce.Problems) != 10 || strings.Contains(msg, "SECRET") || strings.Contains(msg, "agentapi: ") {
		t.Errorf("want 10 problems, no token, no package prefix:\n%s", msg)
	}

	// And a configuration whose tokens can all be read passes.
	ok := "routes:\n  - {name: a, stream: EVENTS, trigger_id: agtch_a, token: {file: " + good + "}}\n" +
		"  - {name: b, stream: EVENTS, trigger_id: agtch_b, token: {env: AGENTRELAY_TEST_GOOD}}\n"
	if _, err := config.Check(strings.NewReader(ok), os.LookupEnv); err != nil {
		t.Errorf("Check of readable tokens: %v", err)
	}
}
