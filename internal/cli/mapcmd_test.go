package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// mapConfig is a configuration with a mapped CloudEvents route, a mapped
// JSON route and a route serving many agents; natsURL may be any URL: map
// never connects.
func mapConfig(t *testing.T, natsURL string) (cfgPath, dir string) {
	t.Helper()
	dir = t.TempDir()
	cfgPath = filepath.Join(dir, "agentrelay.yaml")
	yaml := fmt.Sprintf(`
nats: {url: %q}
api: {base_url: "https://api.example.com"}
streams:
  - {name: EVENTS, subjects: ["crm.>", "agents.>", "ce.>"]}
routes:
  - name: crm
    stream: EVENTS
    subjects: ["crm.tickets.created"]
    trigger_id: agtch_support_123
    token: {file: /run/secrets/support-token}
    map:
      input: '"Ticket " + data.ticket.id + ": " + data.summary'
      conversation_key: 'data.customer.id'
  - name: ce
    stream: EVENTS
    subjects: ["ce.>"]
    body: cloudevents
    trigger_id: agtch_ce
    token: {env: CE_TOKEN}
    map: {input: 'ce.type + ": " + data.summary'}
  - name: agents
    stream: EVENTS
    subjects: ["agents.*.events"]
    map: {trigger_id: 'tokens[1]'}
    allowed_trigger_ids: ["agtch_support_*"]
    token: {dir: /run/secrets/agents}
    agent_tokens: [{ids: "agtch_support_vip", env: VIP_TOKEN}]
`, natsURL)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, dir
}

func runMap(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := Main(ctx, app.Worker{}, append([]string{"map"}, args...), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// map prints the exact call: URL, headers with the token redacted, key and
// body, without NATS (the URL points nowhere) and without the API.
func TestMapPrintsTheCall(t *testing.T) {
	t.Parallel()
	cfg, dir := mapConfig(t, "nats://127.0.0.1:1")
	ev := writeFile(t, dir, "ticket.json", `{"ticket":{"id":"T-4711"},"summary":"Export times out","customer":{"id":"cus_9"}}`)
	code, out, errOut := runMap(t, "", "-c", cfg, "--route", "crm", "--file", ev, "-H", "Nats-Msg-Id=ticket-4711")
	if code != 0 {
		t.Fatalf("map: %d\n%s%s", code, out, errOut)
	}
	want := `POST https://api.example.com/v1/workspace_agents/agtch_support_123/trigger
Authorization: Bearer REDACTED (the token in /run/secrets/support-token)
Content-Type: application/json
Accept: application/json
Idempotency-Key: ticket-4711

{"input":"Ticket T-4711: Export times out","conversation_key":"cus_9"}
`
	if out != want {
		t.Errorf("map printed\n%s\nwant\n%s", out, want)
	}

	// From standard input, without a key of its own: the derived one.
	code, out, _ = runMap(t, `{"ticket":{"id":"T-1"},"summary":"s","customer":{"id":"c"}}`, "-c", cfg, "-r", "crm", "-f", "-")
	if code != 0 || !strings.Contains(out, "Idempotency-Key: (derived when the stream stores it: EVENTS:<sequence>:<stored-time-ns>)") {
		t.Errorf("derived key: %d\n%s", code, out)
	}
}

func TestMapCloudEventInBinaryModeAndManyAgents(t *testing.T) {
	t.Parallel()
	cfg, dir := mapConfig(t, "nats://127.0.0.1:1")
	data := writeFile(t, dir, "data.json", `{"summary":"Export times out"}`)
	code, out, errOut := runMap(t, "", "-c", cfg, "-r", "ce", "-s", "ce.tickets", "-f", data,
		"-H", "ce-specversion=1.0", "-H", "ce-id=evt-1", "-H", "ce-source=https://crm.example.com", "-H", "ce-type:ticket%2Ecreated",
		"-H", "Content-Type: application/json")
	if code != 0 {
		t.Fatalf("map: %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "Idempotency-Key: "+event.CloudEventKey("https://crm.example.com", "evt-1")) ||
		!strings.Contains(out, `{"input":"ticket.created: Export times out"}`) || !strings.Contains(out, "the token in $CE_TOKEN") {
		t.Errorf("binary CloudEvent:\n%s", out)
	}

	body := writeFile(t, dir, "body.json", `{"input":"hello"}`)
	code, out, _ = runMap(t, "", "-c", cfg, "-r", "agents", "-s", "agents.agtch_support_eu.events", "-f", body)
	if code != 0 || !strings.Contains(out, "/v1/workspace_agents/agtch_support_eu/trigger") ||
		!strings.Contains(out, "REDACTED (the token in /run/secrets/agents/agtch_support_eu)") {
		t.Errorf("agent by subject: %d\n%s", code, out)
	}
	code, out, _ = runMap(t, "", "-c", cfg, "-r", "agents", "-s", "agents.agtch_support_vip.events", "-f", body)
	if code != 0 || !strings.Contains(out, "REDACTED (the token in $VIP_TOKEN, agent_tokens[0])") {
		t.Errorf("agent with its own token rule: %d\n%s", code, out)
	}
}

// An event the worker would dead-letter prints the reason and exits 1.
func TestMapSaysWhyAnEventWouldBeDeadLettered(t *testing.T) {
	t.Parallel()
	cfg, dir := mapConfig(t, "nats://127.0.0.1:1")
	body := writeFile(t, dir, "body.json", `{"input":"hello"}`)
	code, out, errOut := runMap(t, "", "-c", cfg, "-r", "agents", "-s", "agents.agtch_sales.events", "-f", body)
	if code != ExitError || !strings.Contains(out, "route agents: not sent: dead-lettered as trigger_not_allowed") ||
		!strings.Contains(out, "agtch_sales is not in allowed_trigger_ids (agtch_support_*)") || !strings.Contains(errOut, "would dead-letter") {
		t.Errorf("trigger_not_allowed: %d\n%s%s", code, out, errOut)
	}
	ticket := writeFile(t, dir, "ticket.json", `{"ticket":{"id":"T-1"},"customer":{"id":"c"}}`)
	code, out, _ = runMap(t, "", "-c", cfg, "-r", "crm", "-f", ticket)
	if code != ExitError || !strings.Contains(out, "dead-lettered as mapping_failed") || !strings.Contains(out, "error: input: no such key: summary") {
		t.Errorf("mapping_failed: %d\n%s", code, out)
	}
	noID := writeFile(t, dir, "noid.json", `{"specversion":"1.0","type":"t","source":"/s","data":{}}`)
	code, out, _ = runMap(t, "", "-c", cfg, "-r", "ce", "-s", "ce.x", "-f", noID, "-H", "Content-Type=application/cloudevents+json")
	if code != ExitError || !strings.Contains(out, "dead-lettered as invalid_cloudevent") || !strings.Contains(out, `"id" is missing`) {
		t.Errorf("invalid_cloudevent: %d\n%s", code, out)
	}
	// Usage mistakes.
	for _, args := range [][]string{
		{"-c", cfg, "-r", "nope", "-f", body},
		{"-c", cfg, "-r", "agents", "-f", body}, // a wildcard subject: --subject needed
		{"-c", cfg, "-r", "crm", "-f", body, "-H", "novalue"},
	} {
		if code, _, errOut := runMap(t, "", args...); code != ExitConfig {
			t.Errorf("map %v: exit %d, want %d\n%s", args, code, ExitConfig, errOut)
		}
	}
}

// events show tells what a mapped route makes of a stored event.
func TestEventsShowPrintsTheMappedInput(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	n.CreateStream(t, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"crm.>", "agents.>", "ce.>"}})
	cfg, _ := mapConfig(t, n.Server.ClientURL())
	n.Publish(t, &nats.Msg{Subject: "crm.tickets.created", Data: []byte(`{"ticket":{"id":"T-4711"},"summary":"Export times out","customer":{"id":"cus_9"}}`)}, jetstream.WithMsgID("t-1"))
	n.Publish(t, &nats.Msg{Subject: "agents.agtch_sales.events", Data: []byte(`{"input":"x"}`)}, jetstream.WithMsgID("s-1"))
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code := Main(ctx, app.Worker{}, []string{"events", "show", "-c", cfg, "EVENTS:1"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("events show: %d\n%s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), `mapped (EVENTS:1, route crm): trigger agtch_support_123, input "Ticket T-4711: Export times out", conversation key "cus_9"`) {
		t.Errorf("events show EVENTS:1:\n%s", out.String())
	}
	out.Reset()
	if code := Main(ctx, app.Worker{}, []string{"events", "show", "-c", cfg, "EVENTS:2"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("events show: %d\n%s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "mapped (EVENTS:2, route agents): dead-lettered as trigger_not_allowed") {
		t.Errorf("events show EVENTS:2:\n%s", out.String())
	}
}

// events show gives the Idempotency-Key the worker really sends: for a
// CloudEvent without a message id, the event's source and id, on the
// event's own line and when searched for by that key. A replay of it
// carries the same key in its headers.
func TestEventsShowGivesTheCloudEventKey(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	n.CreateStream(t, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"crm.>", "agents.>", "ce.>"}})
	cfg, _ := mapConfig(t, n.Server.ClientURL())
	n.Publish(t, &nats.Msg{Subject: "ce.tickets", Header: nats.Header{"Content-Type": {"application/cloudevents+json"}},
		Data: []byte(`{"specversion":"1.0","type":"t","source":"https://crm.example.com/x","id":"evt-9","data":{"summary":"s"}}`)})
	n.Publish(t, &nats.Msg{Subject: "ce.tickets", Header: nats.Header{"ce-specversion": {"1.0"}, "ce-type": {"t"},
		"ce-source": {"https://crm.example.com/y"}, "ce-id": {"evt-10"}}, Data: []byte(`{"summary":"s"}`)})
	structured, binary := event.CloudEventKey("https://crm.example.com/x", "evt-9"), event.CloudEventKey("https://crm.example.com/y", "evt-10")
	show := func(arg string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if code := Main(ctx, app.Worker{}, []string{"events", "show", "-c", cfg, arg}, strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("events show %s: %d\n%s%s", arg, code, out.String(), errOut.String())
		}
		return out.String()
	}
	for _, tc := range []struct{ ref, key string }{{"EVENTS:1", structured}, {"EVENTS:2", binary}} {
		want := regexp.MustCompile(`idempotency key +` + regexp.QuoteMeta(tc.key+" (its CloudEvent's source and id (no message id))"))
		if out := show(tc.ref); !want.MatchString(out) {
			t.Errorf("events show %s: want %s in\n%s", tc.ref, want, out)
		}
		if out := show(tc.key); !regexp.MustCompile(`event +` + tc.ref + "\n").MatchString(out) {
			t.Errorf("events show %s (its key) did not find %s:\n%s", tc.key, tc.ref, out)
		}
	}
}
