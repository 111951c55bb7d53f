package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// Every message a relay takes delivery of is finished exactly once in its
// metrics, whatever ends it: an ack, a retry (a nak with a delay, or a
// retry in place on an ordered route), a dead letter, or a hand-back at a
// drain, of a message under way, waiting for a slot or held for its key.
// So agentrelay_messages_finished_total counts settled messages, and what
// JetStream delivered equals what the relays received.
func TestEveryDeliveredMessageIsFinishedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_fin", true), emulator.WithTrigger("agtch_fino", true),
		emulator.WithFaults(emulator.Faults{Latency: 50 * time.Millisecond}))
	h.emu.Script(
		emulator.Fault{Kind: emulator.FaultServerError, TriggerID: "agtch_fin"},
		emulator.Fault{Kind: emulator.FaultServerError, TriggerID: "agtch_fino"},
		emulator.Fault{Kind: emulator.FaultServerError, TriggerID: "agtch_fin"},
		emulator.Fault{Kind: emulator.FaultServerError, TriggerID: "agtch_fino"},
	)
	unordered := defaultTimings(h.route("fin", "events.fin.>", h.agent("agtch_fin")))
	ordered := defaultTimings(h.route("fino", "events.fino.>", h.agent("agtch_fino")))
	ordered.Ordering = consumer.OrderByConversationKey

	const events, poison, keys, perKey = 400, 10, 4, 20
	for i := range events {
		body := fmt.Sprintf(`{"input":"u %d"}`, i)
		if i%(events/poison) == 7 {
			body = "not json"
		}
		h.publish("events.fin.x", body, nil, fmt.Sprintf("fin-%d", i))
	}
	for i := range perKey {
		for k := range keys {
			h.publish("events.fino.x", fmt.Sprintf(`{"input":"k%d %d","conversation_key":"k%d"}`, k, i, k), nil, fmt.Sprintf("fino-%d-%d", k, i))
		}
	}

	// The first relay drains with a backlog: messages under way, waiting
	// for a slot and held for their key go back; the second finishes.
	first := h.start(unordered, ordered)
	testenv.Eventually(t, 30*time.Second, "a quarter accepted", func() bool { return h.emu.LedgerLen() >= events/4 })
	first.stop(t)
	second := h.start(unordered, ordered)
	h.waitSettled(90*time.Second, "fin", "fino")
	second.stop(t)

	relays := []*running{first, second}
	for _, route := range []string{"fin", "fino"} {
		var received float64
		for i, r := range relays {
			got, finished := metricSum(t, r, "agentrelay_messages_received_total", route), metricSum(t, r, "agentrelay_messages_finished_total", route)
			if got != finished {
				t.Errorf("relay %d, route %s: %v messages received, %v finished", i+1, route, got, finished)
			}
			received += got
		}
		if delivered := h.consumerInfo("agentrelay-" + route).Delivered.Consumer; received != float64(delivered) {
			t.Errorf("route %s: JetStream delivered %d messages, the relays received %v", route, delivered, received)
		}
	}

	// What the test meant to run did run.
	if n := metricSum(t, first, "agentrelay_messages_finished_total", "retried", "canceled"); n == 0 {
		t.Error("the first relay handed nothing back at its drain")
	}
	if n := metricSum(t, first, "agentrelay_messages_finished_total", "fin", "retried", "server_error") +
		metricSum(t, second, "agentrelay_messages_finished_total", "fin", "retried", "server_error"); n == 0 {
		t.Error("no unordered message was retried after a 503")
	}
	if n := h.requestsFor("agtch_fino"); n <= keys*perKey {
		t.Errorf("the ordered route made %d calls for %d events: none was retried in place", n, keys*perKey)
	}
	if n := len(h.deadLetters()); n != poison {
		t.Errorf("%d dead letters, want the %d poison messages", n, poison)
	}
	if n := h.emu.LedgerLen(); n != events-poison+keys*perKey {
		t.Errorf("%d events accepted, want %d", n, events-poison+keys*perKey)
	}
	checkOrderOf(t, h.emu, "agtch_fino", keys, perKey)
}

// refusedOnce refuses, at its write, the first call of each event: the
// client's send check stops it before its bytes go out, as it stops an
// ordered call whose pin lapsed. Later calls go through.
type refusedOnce struct {
	consumer.Agent
	mu   sync.Mutex
	seen map[string]bool
}

var errRefusedForTheTest = errors.New("refused for the test")

func (a *refusedOnce) Trigger(ctx context.Context, ev agentapi.Event) (int, error) {
	a.mu.Lock()
	first := !a.seen[ev.IdempotencyKey]
	a.seen[ev.IdempotencyKey] = true
	a.mu.Unlock()
	if first {
		ctx = agentapi.WithSendCheck(ctx, func() error { return errRefusedForTheTest })
	}
	return a.Agent.Trigger(ctx, ev)
}

// A call refused at its write never reached the API, so it is not counted
// as a trigger request: agentrelay_trigger_requests_total counts what the
// API was sent. Its message is still finished (handed back) and called
// again under the same key.
func TestACallRefusedAtItsWriteIsNotCountedAsARequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_ns", true))
	agent := &refusedOnce{Agent: h.agent("agtch_ns"), seen: map[string]bool{}}
	run := h.start(h.route("ns", "events.ns.>", agent))
	const events = 3
	for i := range events {
		h.publish("events.ns.x", fmt.Sprintf(`{"input":"ns %d"}`, i), nil, fmt.Sprintf("ns-%d", i))
	}
	h.waitSettled(20*time.Second, "ns")

	if got := len(h.emu.Requests()); got != events {
		t.Errorf("the API saw %d requests, want %d (one per event)", got, events)
	}
	if got := metricSum(t, run, "agentrelay_trigger_requests_total", "ns"); got != events {
		t.Errorf("agentrelay_trigger_requests_total = %v, want %d: the refused calls were counted", got, events)
	}
	if got := metricSum(t, run, "agentrelay_trigger_requests_total", "ns", "202"); got != events {
		t.Errorf("agentrelay_trigger_requests_total{code=202} = %v, want %d", got, events)
	}
	if got := metricSum(t, run, "agentrelay_messages_finished_total", "ns", "retried"); got != events {
		t.Errorf("messages finished as retried = %v, want %d (each refused call handed back)", got, events)
	}
	for i := range events {
		if n := h.emu.Accepted("agtch_ns", fmt.Sprintf("ns-%d", i)); n != 1 {
			t.Errorf("ns-%d accepted %d times, want 1", i, n)
		}
	}
}
