package inspect

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/event"
)

// An event's key is what each route's contract makes of it, in the
// worker's order: the Idempotency-Key header, the Nats-Msg-Id, a
// CloudEvent's source and id, the derived key. A CloudEvents route and a
// JSON route on one subject key an event without a message id differently.
func TestKeysOfAreTheWorkersKeys(t *testing.T) {
	json := event.Contract{}.WithDefaults()
	ce := event.Contract{Format: event.BodyCloudEvents}.WithDefaults()
	routes := []dlq.Route{
		{Name: "ce", Stream: "S", Filters: []string{"ce.>"}, Contract: ce},
		{Name: "json", Stream: "S", Filters: []string{"ce.>"}, Contract: json},
		{Name: "elsewhere", Stream: "T", Filters: []string{"ce.>"}, Contract: json},
	}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	md := &jetstream.MsgMetadata{Stream: "S", Sequence: jetstream.SequencePair{Stream: 7}, Timestamp: at}
	body := []byte(`{"specversion":"1.0","type":"t","source":"/src","id":"e-1","data":"x"}`)
	h := nats.Header{"Content-Type": {"application/cloudevents+json"}}
	derived := event.DerivedKey("S", 7, at.UnixNano())
	for _, tc := range []struct {
		name   string
		h      nats.Header
		ceKey  string
		from   string
		jsonOK bool // the JSON route keys it the same
	}{
		{"no message id", h, event.CloudEventKey("/src", "e-1"), "its CloudEvent's source and id (no message id)", false},
		{"a message id", nats.Header{"Content-Type": h["Content-Type"], "Nats-Msg-Id": {"m-1"}}, "m-1", "its Nats-Msg-Id", true},
		{"an Idempotency-Key, any case", nats.Header{"Content-Type": h["Content-Type"], "idempotency-key": {"k-1"}}, "k-1", "its Idempotency-Key header", true},
	} {
		keys := keysOf(t.Context(), routes, "S", event.Message{Subject: "ce.x", Data: body, Header: tc.h, Meta: md})
		if len(keys) != 2 || keys[0].route != "ce" || keys[1].route != "json" {
			t.Fatalf("%s: keys on %+v, want on ce and json", tc.name, keys)
		}
		if keys[0].key != tc.ceKey || keys[0].from != tc.from {
			t.Errorf("%s: CloudEvents route key %q (%s), want %q (%s)", tc.name, keys[0].key, keys[0].from, tc.ceKey, tc.from)
		}
		wantJSON := derived
		if tc.jsonOK {
			wantJSON = tc.ceKey
		}
		if keys[1].key != wantJSON {
			t.Errorf("%s: JSON route key %q, want %q", tc.name, keys[1].key, wantJSON)
		}
	}
	none := keysOf(t.Context(), routes, "S", event.Message{Subject: "other", Data: body, Header: h, Meta: md})
	if len(none) != 1 || none[0].route != "" || none[0].key != derived {
		t.Errorf("a message no route consumes: %+v, want the derived key", none)
	}
	bad := keysOf(t.Context(), routes, "S", event.Message{Subject: "ce.x", Data: body, Header: nats.Header{"Nats-Msg-Id": {"a b"}}, Meta: md})
	if bad[0].problem == "" || bad[0].key != "" {
		t.Errorf("an unusable message id: %+v, want a problem", bad[0])
	}
}
