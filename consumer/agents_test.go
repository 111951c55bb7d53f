package consumer_test

import (
	"errors"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/mapping"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// agentsByID is a consumer.Agents of fixed agents; any other id is refused.
type agentsByID map[string]consumer.Agent

func (a agentsByID) Agent(id agentapi.TriggerID) (consumer.Agent, error) {
	if ag, ok := a[id.String()]; ok {
		return ag, nil
	}
	return nil, errors.New("no such agent")
}

// A route that reads the trigger id from the subject sends each event to
// its own agent, never to the route's Agent; an id outside
// allowed_trigger_ids, and one the route's Agents refuse, are dead-lettered
// as trigger_not_allowed without a call.
func TestEventsGoToTheAgentTheirTriggerIDNames(t *testing.T) {
	t.Parallel()
	h := newHarness(t,
		emulator.WithTrigger("agtch_route", true),
		emulator.WithTrigger("agtch_support_eu", true),
		emulator.WithTrigger("agtch_support_us", true),
		emulator.WithTrigger("agtch_sales", true),
	)
	m, err := mapping.Compile(mapping.Spec{TriggerID: `tokens[2]`})
	if err != nil {
		t.Fatal(err)
	}
	r := h.route("agents", "events.agents.*.in", h.agent("agtch_route"))
	r.Agents = agentsByID{"agtch_support_eu": h.agent("agtch_support_eu"), "agtch_support_us": h.agent("agtch_support_us")}
	r.Contract.Mapping = m
	r.Contract.AllowedTriggerIDs = triggerglob.MustCompile("agtch_support_*")
	h.start(r)

	h.publish("events.agents.agtch_support_eu.in", `{"input":"for eu"}`, nil, "eu-1")
	h.publish("events.agents.agtch_support_us.in", `{"input":"for us"}`, nil, "us-1")
	h.publish("events.agents.agtch_sales.in", `{"input":"for sales"}`, nil, "sales-1")
	h.publish("events.agents.agtch_support_xx.in", `{"input":"no agent"}`, nil, "xx-1")
	h.waitSettled(20*time.Second, "agents")

	for id, key := range map[string]string{"agtch_support_eu": "eu-1", "agtch_support_us": "us-1"} {
		if n := h.emu.Accepted(id, key); n != 1 {
			t.Errorf("%s accepted %s %d times, want 1", id, key, n)
		}
	}
	for _, id := range []string{"agtch_route", "agtch_sales"} {
		for _, key := range []string{"eu-1", "us-1", "sales-1", "xx-1"} {
			if n := h.emu.Accepted(id, key); n != 0 {
				t.Errorf("%s accepted %s %d times, want 0", id, key, n)
			}
		}
	}
	letters := map[string]string{}
	for _, l := range h.deadLetters() {
		letters[l.Header.Get(deadletter.HeaderIdempotencyKey)] = l.Header.Get(deadletter.HeaderReason)
	}
	want := map[string]string{"sales-1": string(deadletter.ReasonTriggerNotAllowed), "xx-1": string(deadletter.ReasonTriggerNotAllowed)}
	if len(letters) != len(want) || letters["sales-1"] != want["sales-1"] || letters["xx-1"] != want["xx-1"] {
		t.Errorf("dead letters by key %v, want %v", letters, want)
	}
}
