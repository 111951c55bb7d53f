package event_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/cloudevents"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/mapping"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

var meta = &jetstream.MsgMetadata{Stream: "EVENTS", Sequence: jetstream.SequencePair{Stream: 42}, Timestamp: time.Unix(1700000000, 5)}

func compile(t *testing.T, s mapping.Spec) *mapping.Mapping {
	t.Helper()
	m, err := mapping.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func read(c event.Contract, m event.Message) event.Decoded {
	return c.WithDefaults().Read(context.Background(), m)
}

const ticketCE = `{"specversion":"1.0","type":"com.example.ticket.created","source":"https://crm.example.com/tickets","id":"evt-0001",
 "datacontenttype":"application/json","data":{"ticket":{"id":"T-4711"},"summary":"Export times out","customer":"cus_9"}}`

var structured = nats.Header{"Content-Type": {"application/cloudevents+json"}}

func TestCloudEventInputIsItsData(t *testing.T) {
	c := event.Contract{Format: event.BodyCloudEvents}
	// Text data, in binary mode, with a percent-encoded attribute.
	d := read(c, event.Message{Data: []byte("Summarise ticket 7"), Header: nats.Header{
		"ce-specversion": {"1.0"}, "ce-type": {"t"}, "ce-source": {"/crm%20eu"}, "ce-id": {"7"}, "Content-Type": {"text/plain"},
	}, Meta: meta})
	if d.Reason != "" || d.Event.Input != "Summarise ticket 7" {
		t.Fatalf("binary text event: %+v", d)
	}
	// JSON data: compact JSON text.
	d = read(c, event.Message{Data: []byte(ticketCE), Header: structured, Meta: meta})
	if d.Reason != "" || d.Event.Input != `{"ticket":{"id":"T-4711"},"summary":"Export times out","customer":"cus_9"}` {
		t.Fatalf("structured JSON event: %+v", d)
	}
	// No data and no mapped input: nothing to send.
	d = read(c, event.Message{Data: []byte(`{"specversion":"1.0","type":"t","source":"s","id":"1"}`), Header: structured})
	if d.Reason != deadletter.ReasonMissingInput {
		t.Fatalf("event without data: %+v", d)
	}
}

func TestMalformedCloudEventIsPoisonNamingTheAttribute(t *testing.T) {
	c := event.Contract{Format: event.BodyCloudEvents}
	d := read(c, event.Message{Data: []byte(`{"specversion":"1.0","type":"t","id":"1","data":"x"}`), Header: structured, Meta: meta})
	if d.Reason != deadletter.ReasonInvalidCloudEvent || !errors.Is(d.Err, cloudevents.ErrInvalid) || !strings.Contains(d.Err.Error(), `"source" is missing`) {
		t.Fatalf("event without source: %+v", d)
	}
	if d.Event.IdempotencyKey == "" {
		t.Error("a poison message still has a key (its dead letter carries it)")
	}
}

func TestIdempotencyKeyPrecedenceWithCloudEvents(t *testing.T) {
	c := event.Contract{Format: event.BodyCloudEvents}
	ceKey := event.CloudEventKey("https://crm.example.com/tickets", "evt-0001")
	for _, tc := range []struct {
		name string
		h    nats.Header
		want string
	}{
		{"the Idempotency-Key header first", nats.Header{"Content-Type": {"application/cloudevents+json"}, "Idempotency-Key": {"replayed-1"}, "Nats-Msg-Id": {"msg-1"}}, "replayed-1"},
		{"then Nats-Msg-Id", nats.Header{"Content-Type": {"application/cloudevents+json"}, "Nats-Msg-Id": {"msg-1"}}, "msg-1"},
		{"then the CloudEvent's source and id", structured, ceKey},
	} {
		d := read(c, event.Message{Data: []byte(ticketCE), Header: tc.h, Meta: meta})
		if d.Reason != "" || d.Event.IdempotencyKey != tc.want {
			t.Errorf("%s: key %q (%v), want %q", tc.name, d.Event.IdempotencyKey, d.Err, tc.want)
		}
	}
	// Not a CloudEvents route: the derived key, as before.
	d := read(event.Contract{}, event.Message{Data: []byte(`{"input":"x"}`), Meta: meta})
	if want := event.DerivedKey("EVENTS", 42, meta.Timestamp.UnixNano()); d.Event.IdempotencyKey != want {
		t.Errorf("JSON route: key %q, want %q", d.Event.IdempotencyKey, want)
	}
	// A bad key of the producer's is still an error, not replaced.
	d = read(c, event.Message{Data: []byte(ticketCE), Header: nats.Header{"Nats-Msg-Id": {"a/b"}}, Meta: meta})
	if !errors.Is(d.KeyErr, agentapi.ErrInvalidIdempotencyKey) {
		t.Errorf("bad Nats-Msg-Id: %+v", d)
	}
}

func TestCloudEventKey(t *testing.T) {
	k := event.CloudEventKey("https://crm.example.com/tickets", "evt-0001")
	if !strings.HasPrefix(k, "ce:") || !strings.HasSuffix(k, ":evt-0001") || agentapi.ValidateIdempotencyKey(k) != nil {
		t.Errorf("key %q: want ce:<source hash>:evt-0001, valid", k)
	}
	if k != event.CloudEventKey("https://crm.example.com/tickets", "evt-0001") {
		t.Error("not deterministic")
	}
	if k == event.CloudEventKey("https://other.example.com/tickets", "evt-0001") {
		t.Error("the same id from two sources gives one key")
	}
	for _, id := range []string{"a/b", "a..b", "é", strings.Repeat("x", 300), "has space"} {
		k := event.CloudEventKey("/s", id)
		if !strings.HasPrefix(k, "ceh:") || agentapi.ValidateIdempotencyKey(k) != nil {
			t.Errorf("id %q: key %q, want a valid hashed one", id, k)
		}
		if k == event.CloudEventKey("/s", id+"x") {
			t.Errorf("id %q: two ids, one key", id)
		}
	}
}

const crmEvent = `{"ticket":{"id":"T-4711","priority":"high"},"summary":"Export times out","customer":{"id":"cus_9"}}`

func TestMappedJSONRoute(t *testing.T) {
	c := event.Contract{Mapping: compile(t, mapping.Spec{
		Input:           `"Ticket " + data.ticket.id + ": " + data.summary`,
		ConversationKey: `data.customer.id`,
	})}
	d := read(c, event.Message{Subject: "crm.tickets", Data: []byte(crmEvent), Meta: meta})
	if d.Reason != "" || d.Event.Input != "Ticket T-4711: Export times out" || d.Event.ConversationKey != "cus_9" || !d.TriggerID.IsZero() {
		t.Fatalf("mapped event: %+v", d)
	}
	for _, tc := range []struct {
		name   string
		body   string
		reason deadletter.Reason
		err    string
	}{
		{"a field the event lacks", `{"ticket":{"id":"T-1"},"customer":{"id":"c"}}`, deadletter.ReasonMappingFailed, "input: no such key: summary"},
		{"an empty input", `{"ticket":{"id":""},"summary":"","customer":{"id":"c"}}`, "", ""},
		{"not JSON", `ticket T-1`, deadletter.ReasonInvalidJSON, "body: not valid JSON"},
		{"a repeated key", `{"ticket":{"id":"T-1"},"summary":"a","summary":"b","customer":{"id":"c"}}`, deadletter.ReasonInvalidJSON, `"summary" appears more than once`},
		{"a conversation key with a line break", `{"ticket":{"id":"T-1"},"summary":"s","customer":{"id":"a\nb"}}`, deadletter.ReasonInvalidConversationKey, "control character"},
	} {
		d := read(c, event.Message{Data: []byte(tc.body), Meta: meta})
		if tc.reason == "" {
			continue // checked below: "Ticket : " is not empty
		}
		if d.Reason != tc.reason || !strings.Contains(d.Err.Error(), tc.err) {
			t.Errorf("%s: %s %v, want %s saying %q", tc.name, d.Reason, d.Err, tc.reason, tc.err)
		}
	}
	empty := event.Contract{Mapping: compile(t, mapping.Spec{Input: `data.summary`})}
	if d := read(empty, event.Message{Data: []byte(`{"summary":""}`)}); d.Reason != deadletter.ReasonMappingFailed || !strings.Contains(d.Err.Error(), "the input is empty") {
		t.Errorf("empty mapped input: %+v", d)
	}
}

// An input longer than max_input_bytes is refused whole, never cut to fit.
func TestMappedInputOverTheLimitIsPoisonNotTruncated(t *testing.T) {
	c := event.Contract{MaxInputBytes: 64, Mapping: compile(t, mapping.Spec{Input: `data.a + data.a`})}
	d := read(c, event.Message{Data: []byte(`{"a":"` + strings.Repeat("x", 40) + `"}`), Meta: meta})
	if d.Reason != deadletter.ReasonInputTooLarge || d.Event.Input != "" || !strings.Contains(d.Err.Error(), "input is 80 bytes, limit 64") {
		t.Fatalf("80-byte input, limit 64: %+v", d)
	}
	if d := read(c, event.Message{Data: []byte(`{"a":"` + strings.Repeat("x", 32) + `"}`)}); d.Reason != "" || len(d.Event.Input) != 64 {
		t.Fatalf("64-byte input, limit 64: %+v", d)
	}
	// The whole event as the input, formatted as JSON: the same rule.
	whole := event.Contract{MaxInputBytes: 64, Mapping: compile(t, mapping.Spec{Input: `data`})}
	if d := read(whole, event.Message{Data: []byte(`{"a":"` + strings.Repeat("x", 80) + `"}`)}); d.Reason != deadletter.ReasonInputTooLarge || d.Event.Input != "" {
		t.Fatalf("an 88-byte JSON input, limit 64: %+v", d)
	}
}

func TestCloudEventMappedFromAttributesAndData(t *testing.T) {
	c := event.Contract{Format: event.BodyCloudEvents, Mapping: compile(t, mapping.Spec{
		Input:           `ce.type + " from " + ce.source + ": " + data.summary`,
		ConversationKey: `data.customer`,
	})}
	d := read(c, event.Message{Data: []byte(ticketCE), Header: structured, Meta: meta})
	if d.Reason != "" || d.Event.Input != "com.example.ticket.created from https://crm.example.com/tickets: Export times out" || d.Event.ConversationKey != "cus_9" {
		t.Fatalf("mapped CloudEvent: %+v", d)
	}
}

func TestTriggerIDFromTheSubject(t *testing.T) {
	c := event.Contract{
		Mapping:           compile(t, mapping.Spec{TriggerID: `tokens[1]`}),
		AllowedTriggerIDs: triggerglob.MustCompile("agtch_support_*", "agtch_billing"),
	}
	body := []byte(`{"input":"Summarise ticket 7"}`)
	d := read(c, event.Message{Subject: "agents.agtch_support_eu.events", Data: body, Meta: meta})
	if d.Reason != "" || d.TriggerID.String() != "agtch_support_eu" || d.Event.Input != "Summarise ticket 7" {
		t.Fatalf("allowed id: %+v", d)
	}
	for subject, want := range map[string]string{
		"agents.agtch_sales.events": "agtch_sales is not in allowed_trigger_ids (agtch_support_*, agtch_billing)",
		"agents.agtch_billing2.x":   "not in allowed_trigger_ids",
		"agents.support.events":     "the mapped trigger id is not one",
		"agents.agtch_a%2F.events":  "the mapped trigger id is not one",
	} {
		d := read(c, event.Message{Subject: subject, Data: body, Meta: meta})
		if d.Reason != deadletter.ReasonTriggerNotAllowed || !strings.Contains(d.Err.Error(), want) || !d.TriggerID.IsZero() {
			t.Errorf("%s: %s %v, want trigger_not_allowed saying %q", subject, d.Reason, d.Err, want)
		}
	}
	// A subject too short for the expression: the mapping fails.
	if d := read(c, event.Message{Subject: "agents", Data: body}); d.Reason != deadletter.ReasonMappingFailed || !strings.Contains(d.Err.Error(), "trigger_id: index out of bounds") {
		t.Errorf("short subject: %+v", d)
	}
	// An id outside the list is refused even when the input fails too.
	both := event.Contract{
		Mapping:           compile(t, mapping.Spec{TriggerID: `tokens[1]`, Input: `data.missing`}),
		AllowedTriggerIDs: triggerglob.MustCompile("agtch_support_*"),
	}
	if d := read(both, event.Message{Subject: "agents.agtch_sales.x", Data: []byte(`{}`)}); d.Reason != deadletter.ReasonTriggerNotAllowed {
		t.Errorf("unknown id and a failing input: %s, want trigger_not_allowed first", d.Reason)
	}
}

// Decode, the body-only view (dlq replay's check, the fuzz tests), reads a
// mapped route's body as Read does.
func TestDecodeOfAMappedContract(t *testing.T) {
	c := event.Contract{Format: event.BodyCloudEvents}.WithDefaults()
	ev, reason, err := c.Decode([]byte(ticketCE), structured)
	if reason != "" || ev.Input == "" || ev.IdempotencyKey != "" {
		t.Fatalf("Decode: %+v %s %v", ev, reason, err)
	}
}
