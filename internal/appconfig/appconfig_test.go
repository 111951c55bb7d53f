package appconfig

import (
	"slices"
	"testing"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/event"
)

// What the tools check of a file without the worker: the dead-letter
// stream kept apart, and every mapping compiled, each at its field's path.
func TestProblemsAtTheirPaths(t *testing.T) {
	cfg := &config.Config{
		Streams: []config.Stream{{Name: "AGENTRELAY_DLQ"}, {Name: "W", Subjects: []string{"agentrelay.dlq.x"}}},
		Routes: []config.Route{
			{Name: "ok", Stream: "W", Map: config.Map{Input: `"x " + data.a`}},
			{Name: "bad", Stream: "W", Map: config.Map{Input: `nope`, TriggerID: `1`}},
			{Name: "loop", Stream: "AGENTRELAY_DLQ"},
		},
	}
	got := Problems(cfg)
	want := []string{
		`streams[0].name: "AGENTRELAY_DLQ" is the dead-letter stream; configure it under dead_letter`,
		`streams[1].subjects[0]: "agentrelay.dlq.x" overlaps the dead-letter subjects agentrelay.dlq.>`,
		"routes[1].map.input: undeclared reference to 'nope' (at 1:1)",
		"routes[1].map.trigger_id: the expression gives int; it must give a string",
		`routes[2].stream: "AGENTRELAY_DLQ" is the dead-letter stream; relaying from it would loop (replay dead letters with ` + "`agentrelay dlq replay`)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%q\nwant\n%q", got, want)
	}
}

// A route's contract is its body settings with its mapping compiled.
func TestContract(t *testing.T) {
	rc := config.Route{Body: "cloudevents", MaxInputBytes: 10, AllowedTriggerIDs: []string{"agtch_a_*"}, Map: config.Map{TriggerID: `tokens[1]`}}
	c, err := Contract(rc)
	if err != nil {
		t.Fatal(err)
	}
	if c.Format != event.BodyCloudEvents || c.MaxInputBytes != 10 || !c.Mapping.MapsTriggerID() || !c.AllowedTriggerIDs.Match("agtch_a_1") {
		t.Errorf("contract %+v", c)
	}
	if b := BaseContract(rc); b.Mapping != nil || b.Format != event.BodyCloudEvents {
		t.Errorf("base contract %+v", b)
	}
}
