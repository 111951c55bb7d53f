package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// storedMsg is a message read back from its stream, as the dead-letter
// writer takes an original.
type storedMsg struct{ m *jetstream.RawStreamMsg }

func (s storedMsg) Subject() string      { return s.m.Subject }
func (s storedMsg) Headers() nats.Header { return s.m.Header }
func (s storedMsg) Data() []byte         { return s.m.Data }

// A route serving many agents has no trigger of its own: its dead letters
// name the agent each event was for (as the worker writes them), and dlq
// replay sends each back to that agent, while the route may still call it.
// A letter for an id its allowed_trigger_ids no longer allow stays, saying
// why. The replays are accepted by the agents they were for, with their
// original keys, and by no other.
func TestReplayOfARouteServingManyAgents(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	const (
		eu, us, sales, unused = "agtch_support_eu", "agtch_support_us", "agtch_sales", "agtch_route_unused"
		tok                   = "tok-agents-DO-NOT-LOG"
	)
	emu, _ := testenv.Emulator(t, emulator.WithRequestLog(100), emulator.WithToken(tok, eu, us, sales, unused),
		emulator.WithTrigger(eu, true), emulator.WithTrigger(us, true), emulator.WithTrigger(sales, true), emulator.WithTrigger(unused, true))
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "agentrelay.yaml")
	// allowed_trigger_ids once allowed agtch_sales too: its letter was
	// written then.
	yaml := fmt.Sprintf(`
nats: {url: %q}
api: {base_url: %q, allow_insecure_http: true, timeout: 2s}
streams:
  - {name: AGENTS, subjects: ["agents.>"]}
routes:
  - name: agents
    stream: AGENTS
    subjects: ["agents.*.events"]
    map: {trigger_id: 'tokens[1]'}
    allowed_trigger_ids: ["agtch_support_*"]
    token: {file: %q}
`, n.Server.ClientURL(), emuURL(t, emu), tokenFile)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	n.CreateStream(t, app.StreamConfig(cfg.Streams[0]))

	// Three events the agents refused (403), dead-lettered as the worker
	// does: the facts name the event's own trigger id.
	ctx := t.Context()
	dl := deadletter.NewWriter(n.JS, appconfig.DeadLetter(cfg.DeadLetter))
	if err := dl.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.JS.Stream(ctx, "AGENTS")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{eu, us, sales} {
		ack := n.Publish(t, &nats.Msg{Subject: "agents." + id + ".events", Data: []byte(`{"input":"for ` + id + `"}`)}, jetstream.WithMsgID("key-"+id))
		m, err := st.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		md := &jetstream.MsgMetadata{Stream: "AGENTS", Sequence: jetstream.SequencePair{Stream: ack.Sequence}, Timestamp: m.Time}
		if _, err := dl.Publish(ctx, storedMsg{m}, md, deadletter.Facts{
			Reason: string(deadletter.ReasonForbidden), Class: string(agentapi.ClassForbidden), Status: 403,
			Route: "agents", TriggerID: id, Attempts: 1, IdempotencyKey: "key-" + id,
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The worker terminated them: the stream holds only what replay adds.
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}

	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, "", append([]string{"--config", cfgPath}, args...)...)
	}
	code, out, errOut := cli("dlq", "replay", "--route", "agents", "--dry-run")
	for _, want := range []string{
		"would replay 1 (agents, forbidden) to agents.agtch_support_eu.events for trigger agtch_support_eu with Idempotency-Key key-agtch_support_eu",
		"would replay 2 (agents, forbidden) to agents.agtch_support_us.events for trigger agtch_support_us with Idempotency-Key key-agtch_support_us",
		`refuse 3: it was for trigger "agtch_sales", which route agents's allowed_trigger_ids (agtch_support_*) do not allow (add the id to the route's allowed_trigger_ids`,
		"dry run: 2 would be replayed, 1 refused",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("dlq replay --dry-run: exit %d, want %q in\n%s%s", code, want, out, errOut)
		}
	}
	code, out, errOut = cli("dlq", "replay", "--route", "agents")
	if code != ExitError || !strings.Contains(out, "replayed 2 dead letters") || !strings.Contains(errOut, "1 of 3 dead letters refused") {
		t.Errorf("dlq replay: exit %d\n%s%s", code, out, errOut)
	}

	// The worker takes the replays: each goes to the agent it was for.
	// The route's own Agent is only there because the relay asks for one;
	// no event of a route that maps its trigger id may reach it.
	_, routes, err := app.BuildRoutes(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	client, err := agentapi.NewClient(cfg.API.BaseURL, app.ClientOptions(cfg))
	if err != nil {
		t.Fatal(err)
	}
	unusedID, err := agentapi.ParseTriggerID(unused)
	if err != nil {
		t.Fatal(err)
	}
	if routes[0].Agent, err = client.Agent(unusedID, agentapi.StaticToken(agentapi.NewSecret(tok))); err != nil {
		t.Fatal(err)
	}
	_, js := n.Connect(t)
	relay, err := consumer.New(js, routes, consumer.Options{DeadLetter: appconfig.DeadLetter(cfg.DeadLetter), PullExpiry: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	testenv.Eventually(t, 20*time.Second, "the replays accepted", func() bool {
		return emu.Accepted(eu, "key-"+eu) == 1 && emu.Accepted(us, "key-"+us) == 1
	})
	for _, r := range emu.Requests() {
		if r.TriggerID != eu && r.TriggerID != us {
			t.Errorf("a call to %s (key %s): the replays are for %s and %s only", r.TriggerID, r.Header.Get("Idempotency-Key"), eu, us)
		}
	}
	code, out, _ = cli("dlq", "list", "--route", "agents")
	if code != 0 || !strings.Contains(out, "agents.agtch_sales.events") || strings.Contains(out, "agtch_support") {
		t.Errorf("dlq list after the replay: exit %d, want only the letter for agtch_sales left\n%s", code, out)
	}
}
