package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/subject"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// The demo's mapped routes pass config check, and each sample ends as its
// description says: the contract decides the call (to the agent named) or
// the dead-letter reason, and the demo's emulator accepts the call, or
// answers 409 for the agent that is not runnable.
func TestDemoMappedRoutesAndSamples(t *testing.T) {
	t.Parallel()
	emu, apiURL := testenv.Emulator(t, devMappingEmulator("dev-token")...)
	client, err := agentapi.NewClient(apiURL, agentapi.ClientOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	spec := &config.Config{
		API:     config.API{BaseURL: apiURL},
		Streams: []config.Stream{{Name: "DEMO", Subjects: []string{"demo.>"}}},
		Routes:  devMappingRoutes("DEMO", "/tmp/agent-token"),
	}
	doc, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Read(strings.NewReader(string(doc)), func(string) (string, bool) { return "", false }, app.CheckConfig)
	if err != nil {
		t.Fatalf("the demo's mapped routes do not pass config check: %v", err)
	}
	routes := map[string]config.Route{}
	for _, rc := range cfg.Routes {
		routes[rc.Name] = rc
	}
	want := []struct{ route, trigger, reason, input string }{
		{"tickets", devTicketsID, "", "New com.example.ticket.created from https://crm.example.com/tickets: ticket T-4711, Exports time out after two minutes"},
		{"tickets", devTicketsID, "", "New com.example.ticket.created from https://crm.example.com/tickets eu: ticket T-4712, Invoice shows the wrong VAT"},
		{"tickets", "", "invalid_cloudevent", ""},
		{"teams", devSalesID, "", "Qualify the lead from ACME."},
		{"teams", devBillingID, "", "Explain invoice 77."},
		{"teams", devLegalID, "", "Review the NDA."},
		{"teams", "", "trigger_not_allowed", ""},
	}
	samples := devMappingSamples("run1")
	if len(samples) != len(want) {
		t.Fatalf("%d samples, %d expectations", len(samples), len(want))
	}
	for i, s := range samples {
		w := want[i]
		rc, ok := routes[w.route]
		if !ok || !subjectOf(rc, s.subject) {
			t.Fatalf("sample %d (%s): route %s does not take %s", i, s.what, w.route, s.subject)
		}
		call, err := mapEvent(context.Background(), cfg, rc, event.Message{Subject: s.subject, Data: []byte(s.body), Header: s.header})
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		if call.reason != w.reason || call.trigger != w.trigger || call.input != w.input {
			t.Errorf("sample %d (%s): trigger %q input %q reason %q (%s)\nwant trigger %q input %q reason %q",
				i, s.what, call.trigger, call.input, call.reason, call.errText, w.trigger, w.input, w.reason)
		}
		if call.reason != "" {
			continue
		}
		id, _ := agentapi.ParseTriggerID(call.trigger)
		agent, err := client.Agent(id, agentapi.StaticToken(agentapi.NewSecret("dev-token")))
		if err != nil {
			t.Fatal(err)
		}
		status, _ := agent.Trigger(context.Background(), agentapi.Event{Input: call.input, ConversationKey: call.convKey, IdempotencyKey: fmt.Sprintf("k-%d", i)})
		if want := map[bool]int{true: 409, false: 202}[call.trigger == devLegalID]; status != want {
			t.Errorf("sample %d (%s): the emulator answered %d, want %d", i, s.what, status, want)
		}
	}
	if emu.Accepted(devSalesID, "k-3") != 1 {
		t.Error("the sales agent did not accept its event")
	}
}

func subjectOf(rc config.Route, s string) bool {
	for _, f := range rc.Subjects {
		if subject.Matches(f, s) {
			return true
		}
	}
	return false
}
