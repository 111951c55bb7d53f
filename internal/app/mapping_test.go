package app

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/event"
)

// Every problem of the mapping and many-agents settings is reported at its
// field's path, with the others, by the code config check and run share.
func TestMappingProblemsAtTheirPaths(t *testing.T) {
	t.Parallel()
	_, err := readChecked(t, `
routes:
  - name: ok
    stream: EVENTS
    trigger_id: agtch_ok
    token: {env: T}
  - name: crm
    stream: EVENTS
    trigger_id: agtch_crm
    token: {env: T}
    map:
      input: '"Ticket " + ticket.id'
      conversation_key: 'subject + 1'
  - name: agents
    stream: EVENTS
    trigger_id: agtch_also
    token: {env: T, dir: /tmp}
    map:
      trigger_id: 'tokens'
    allowed_trigger_ids: ["*", "agtch_ok_*", "agtch_a/b"]
    agent_tokens:
      - {ids: "support_*", file: /x}
      - {ids: "agtch_x"}
  - name: many
    stream: EVENTS
    map: {trigger_id: 'tokens[1]'}
  - name: single
    stream: EVENTS
    trigger_id: agtch_single
    token: {dir: /tmp}
    allowed_trigger_ids: ["agtch_*"]
    agent_tokens: [{ids: "agtch_*", env: X}]
  - name: ce
    stream: EVENTS
    body: cloudevents
    trigger_id: agtch_ce
    token: {env: T}
    map: {input: 'ce.type + ": " + data.summary'}
`)
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want a *config.Error, got %v", err)
	}
	want := []string{
		`routes[1].map.input: undeclared reference to 'ticket' (at 1:13)`,
		`routes[1].map.conversation_key: found no matching overload for '_+_' applied to '(string, int)'`,
		`routes[2].token: set one of file, env or dir`,
		`routes[2].trigger_id: set trigger_id or map.trigger_id, not both`,
		`routes[2].allowed_trigger_ids[0]: "*": a pattern begins with "agtch_" (use "agtch_*" to allow every trigger id)`,
		`routes[2].allowed_trigger_ids[2]: "agtch_a/b": byte 7 is not`,
		`routes[2].agent_tokens[0].ids: "support_*": a pattern begins with`,
		`routes[2].agent_tokens[1]: set file or env`,
		`routes[2].map.trigger_id: the expression gives list(string); it must give a string`,
		`routes[3].allowed_trigger_ids: required with map.trigger_id`,
		`routes[3].token: set file, env or dir (a file per trigger id), or agent_tokens`,
		`routes[4].token.dir: a token per trigger id is for a route that takes its trigger id from its events`,
		`routes[4].allowed_trigger_ids: only with map.trigger_id: this route calls agtch_single`,
		`routes[4].agent_tokens: only with map.trigger_id`,
	}
	got := strings.Join(ce.Problems, "\n")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing problem %q", w)
		}
	}
	if strings.Contains(got, "routes[5]") || strings.Contains(got, "routes[0]") {
		t.Errorf("problems for the valid routes:\n%s", got)
	}
	if len(ce.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(ce.Problems), len(want), got)
	}
}

// A route serving many agents is built with its agent set and its
// compiled mapping; a CloudEvents route with its contract.
func TestBuildRoutesWithMappingAndManyAgents(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "agtch_support_eu"), []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := readChecked(t, `
api: {base_url: "http://127.0.0.1:1"}
routes:
  - name: agents
    stream: EVENTS
    subjects: ["agents.*.events"]
    map: {trigger_id: 'tokens[1]'}
    allowed_trigger_ids: ["agtch_support_*"]
    token: {dir: `+dir+`}
  - name: ce
    stream: EVENTS
    body: cloudevents
    trigger_id: agtch_ce
    token: {dir: `+dir+`}
`)
	if err == nil || !strings.Contains(err.Error(), "routes[1].token.dir") {
		t.Fatalf("a token directory on a one-agent route: %v", err)
	}
	c, err := readChecked(t, `
api: {base_url: "http://127.0.0.1:1"}
routes:
  - name: agents
    stream: EVENTS
    subjects: ["agents.*.events"]
    map: {trigger_id: 'tokens[1]', input: '"Ticket " + data.id'}
    allowed_trigger_ids: ["agtch_support_*"]
    token: {dir: `+dir+`}
  - name: ce
    stream: EVENTS
    body: cloudevents
    trigger_id: agtch_ce
    token: {file: `+filepath.Join(dir, "agtch_support_eu")+`}
`)
	if err != nil {
		t.Fatal(err)
	}
	_, routes, err := BuildRoutes(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	agents, ce := routes[0], routes[1]
	if agents.Agent != nil || agents.Agents == nil || !agents.Contract.Mapping.MapsTriggerID() || !agents.Contract.AllowedTriggerIDs.Match("agtch_support_eu") {
		t.Errorf("many-agent route: %+v", agents)
	}
	if ce.Agent == nil || ce.Agents != nil || ce.Contract.Format != event.BodyCloudEvents || ce.Contract.Mapping != nil {
		t.Errorf("CloudEvents route: %+v", ce)
	}
}

// The example's mapped routes are comments (the example is a one-route
// file); uncommented, they pass config check.
func TestExampleMappedRoutesAreValid(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../config/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "  # - name: crm-tickets")
	if i < 0 {
		t.Fatal("the example's mapped routes are gone")
	}
	var out []string
	for _, line := range strings.Split(text[i:], "\n") {
		if rest, ok := strings.CutPrefix(line, "  # "); ok && (strings.HasPrefix(rest, "- ") || strings.HasPrefix(rest, "  ")) {
			out = append(out, "  "+rest)
		}
	}
	yaml := text[:i] + strings.Join(out, "\n") + "\n"
	c, err := readChecked(t, yaml)
	if err != nil {
		t.Fatalf("the example with its mapped routes:\n%v", err)
	}
	if len(c.Routes) != 3 || !c.Routes[2].MapsTriggerID() || c.Routes[1].Body != "cloudevents" {
		t.Fatalf("routes %+v", c.Routes)
	}
}
