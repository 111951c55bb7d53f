package event_test

import (
	"context"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/mapping"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// Whatever a producer sends to a CloudEvents route with a mapping, Read
// either refuses it with a reason and sends nothing, or gives a call the
// API takes: a non-empty UTF-8 input within the limit, a valid
// conversation key, an allowed trigger id.
func FuzzReadMappedCloudEvents(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","type":"t","source":"s","id":"1","data":{"summary":"x","agent":"agtch_a"}}`), "application/cloudevents+json", "", "agents.agtch_a.x")
	f.Add([]byte(`{"summary":"x"}`), "application/json", "1", "agents.agtch_b.x")
	f.Add([]byte(`{"specversion":"1.0","type":"t","source":"s","id":"1","data_base64":"eyJzdW1tYXJ5IjoieCJ9"}`), "", "", "a")
	m, err := mapping.Compile(mapping.Spec{
		Input:           `ce.type + ": " + data.summary`,
		ConversationKey: `data.?key.orValue(null)`,
		TriggerID:       `tokens.size() > 1 ? tokens[1] : "agtch_default"`,
	})
	if err != nil {
		f.Fatal(err)
	}
	c := event.Contract{Format: event.BodyCloudEvents, MaxInputBytes: 256, Mapping: m, AllowedTriggerIDs: triggerglob.MustCompile("agtch_a*")}.WithDefaults()
	f.Fuzz(func(t *testing.T, body []byte, contentType, ceID, subject string) {
		h := nats.Header{}
		if contentType != "" {
			h.Set("Content-Type", contentType)
		}
		if ceID != "" {
			h.Set("ce-id", ceID)
			h.Set("ce-specversion", "1.0")
			h.Set("ce-type", "t")
			h.Set("ce-source", "s")
		}
		d := c.Read(context.Background(), event.Message{Subject: subject, Data: body, Header: h})
		if d.Reason != "" {
			if d.Err == nil || d.Event.Input != "" {
				t.Fatalf("refused (%s) with error %v and input %q", d.Reason, d.Err, d.Event.Input)
			}
			return
		}
		ev := d.Event
		if ev.Input == "" || len(ev.Input) > 256 || !utf8.ValidString(ev.Input) || agentapi.ValidateConversationKey(ev.ConversationKey) != nil {
			t.Fatalf("a call the API would refuse: %+v", ev)
		}
		if !triggerglob.MustCompile("agtch_a*").Match(d.TriggerID.String()) {
			t.Fatalf("trigger %q outside the allowed ids", d.TriggerID)
		}
	})
}
