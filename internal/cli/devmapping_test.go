package cli

import (
	"context"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/subject"
)

// The demo's mapped routes pass config check, and each sample ends as its
// description says, as far as the contract decides it: the call (to the
// agent named) or the dead-letter reason.
func TestDemoMappedRoutesAndSamples(t *testing.T) {
	spec := &config.Config{
		API:     config.API{BaseURL: "http://127.0.0.1:8089"},
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
