//go:build !release

package cli

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/config"
)

// The demo's mapped routes (issue 20): a CloudEvents route whose input is a
// template over the event, and one route serving several agents, the
// trigger id taken from the subject, one agent not runnable. dev wires
// them in: devMappingEmulator's options into the emulator,
// devMappingRoutes into the configuration's routes, devMappingSamples into
// the demo producer's samples.
const (
	devTicketsID = "agtch_demo_tickets"
	devSalesID   = "agtch_team_sales"
	devBillingID = "agtch_team_billing"
	devLegalID   = "agtch_team_legal" // not runnable: its events wait
)

// devMappingEmulator registers the mapped routes' agents, the dev token
// allowed to call them all.
func devMappingEmulator(token string) []emulator.Option {
	return []emulator.Option{
		emulator.WithToken(token, devTicketsID, devSalesID, devBillingID, devLegalID),
		emulator.WithTrigger(devTicketsID, true),
		emulator.WithTrigger(devSalesID, true),
		emulator.WithTrigger(devBillingID, true),
		emulator.WithTrigger(devLegalID, false),
	}
}

// devMappingRoutes are the mapped routes on stream, reading the token in
// tokenFile. Their subjects are under demo.>.
func devMappingRoutes(stream, tokenFile string) []config.Route {
	tok := config.Token{File: tokenFile}
	return []config.Route{{
		Name: "tickets", Stream: stream, Subjects: []string{"demo.ce.>"},
		TriggerID: devTicketsID, Token: tok,
		Body: "cloudevents",
		Map: config.Map{
			Input:           `"New " + ce.type + " from " + ce.source + ": ticket " + data.ticket.id + ", " + data.summary`,
			ConversationKey: `data.customer.id`,
		},
	}, {
		Name: "teams", Stream: stream, Subjects: []string{"demo.agents.*.events"},
		Map:               config.Map{TriggerID: `tokens[2]`},
		AllowedTriggerIDs: []string{"agtch_team_*"},
		Token:             tok,
	}}
}

// devSample is one event the demo producer publishes.
type devSample struct {
	what, subject, body string
	header              nats.Header
}

// devMappingSamples are the mapped routes' sample events; run makes the
// CloudEvents' ids unique to the run, as their source and id are their
// idempotency key.
func devMappingSamples(run string) []devSample {
	ce := `{"specversion":"1.0","type":"com.example.ticket.created","source":"https://crm.example.com/tickets",` +
		`"id":"%s","datacontenttype":"application/json","data":{"ticket":{"id":"T-%d"},"summary":"%s","customer":{"id":"cus_%d"}}}`
	return []devSample{
		{"accepted: a structured CloudEvent, its input mapped from its type, source and data", "demo.ce.tickets",
			fmt.Sprintf(ce, "evt-"+run+"-1", 4711, "Exports time out after two minutes", 9),
			nats.Header{"Content-Type": {"application/cloudevents+json"}}},
		{"accepted: a binary-mode CloudEvent (ce- headers, percent-encoded)", "demo.ce.tickets",
			`{"ticket":{"id":"T-4712"},"summary":"Invoice shows the wrong VAT","customer":{"id":"cus_12"}}`,
			nats.Header{
				"ce-specversion": {"1.0"}, "ce-type": {"com.example.ticket.created"}, "ce-id": {"evt-" + run + "-2"},
				"ce-source": {"https://crm.example.com/tickets%20eu"}, "Content-Type": {"application/json"},
			}},
		{"dead-lettered: invalid_cloudevent (no source)", "demo.ce.tickets",
			`{"specversion":"1.0","type":"t","id":"x","data":{}}`, nats.Header{"Content-Type": {"application/cloudevents+json"}}},
		{"accepted by the sales agent (trigger id from the subject)", "demo.agents." + devSalesID + ".events", `{"input":"Qualify the lead from ACME."}`, nil},
		{"accepted by the billing agent, on the same route", "demo.agents." + devBillingID + ".events", `{"input":"Explain invoice 77."}`, nil},
		{"waits: the legal agent is not runnable (409); the route's other agents go on", "demo.agents." + devLegalID + ".events", `{"input":"Review the NDA."}`, nil},
		{"dead-lettered: trigger_not_allowed (not in allowed_trigger_ids)", "demo.agents.agtch_payroll.events", `{"input":"Raise everyone's salary."}`, nil},
	}
}
