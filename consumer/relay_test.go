package consumer_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// Every row of the decision table, end to end: real NATS, real HTTP, the
// emulator's real answers.
func TestEndToEndDecisionTable(t *testing.T) {
	t.Parallel()
	h := newHarness(t,
		emulator.WithTrigger("agtch_ok", true),
		emulator.WithTrigger("agtch_paused", false),
		emulator.WithTrigger("agtch_flaky", true),
		emulator.WithTrigger("agtch_broken", true),
		emulator.WithTrigger("agtch_bad", true),
		emulator.WithTrigger("agtch_locked", true),
	)
	h.emu.AddToken("tok-locked-out") // valid token, no permissions
	// The test token may call everything but agtch_locked: rebuild its grant.
	h.emu.RevokeToken(tok)
	const tok2 = "tok-e2e-2"
	h.emu.AddToken(tok2, "agtch_ok", "agtch_paused", "agtch_flaky", "agtch_broken", "agtch_bad", "agtch_missing")
	agent := func(id string) consumer.Agent {
		return h.agent(id, staticToken(tok2))
	}

	ok := h.route("ok", "events.ok.>", agent("agtch_ok"))
	ok.Contract.MaxInputBytes = 64
	text := h.route("text", "events.text.>", agent("agtch_ok"))
	text.Contract.Format = event.BodyText
	paused := h.route("paused", "events.paused.>", agent("agtch_paused"))
	paused.Retry.MaxAttempts = 100
	flaky := h.route("flaky", "events.flaky.>", agent("agtch_flaky"))
	broken := h.route("broken", "events.broken.>", agent("agtch_broken"))
	broken.Retry.MaxAttempts = 3
	bad := h.route("bad", "events.bad.>", agent("agtch_bad"))
	locked := h.route("locked", "events.locked.>", agent("agtch_locked"))
	missing := h.route("missing", "events.missing.>", agent("agtch_missing"))

	h.emu.Script(
		emulator.Fault{Kind: emulator.FaultServerError, Status: 503, TriggerID: "agtch_flaky"},
		emulator.Fault{Kind: emulator.FaultRateLimit, RetryAfter: "1", TriggerID: "agtch_flaky"},
		emulator.Fault{Kind: emulator.FaultServerError, Status: 502, TriggerID: "agtch_flaky"},
		emulator.Fault{Kind: emulator.FaultServerError, Status: 503, TriggerID: "agtch_broken"},
		emulator.Fault{Kind: emulator.FaultServerError, Status: 503, TriggerID: "agtch_broken"},
		emulator.Fault{Kind: emulator.FaultServerError, Status: 503, TriggerID: "agtch_broken"},
		emulator.Fault{Kind: emulator.FaultServerError, Status: 400, TriggerID: "agtch_bad"},
	)

	h.start(ok, text, paused, flaky, broken, bad, locked, missing)

	// 202: ack, one ledger entry per event, keyed by message id, derived key
	// or explicit Idempotency-Key.
	h.publish("events.ok.1", `{"input":"hello","conversation_key":"c-1"}`, nil, "ok-1")
	seq := h.publish("events.ok.2", `{"input":"no message id"}`, nil, "").Sequence
	h.publish("events.ok.3", `{"input":"replayed"}`, nats.Header{"Idempotency-Key": {"replay-key-1"}}, "new-msg-id")
	h.publish("events.text.1", "plain text input", nats.Header{"Conversation-Key": {"thread-9"}}, "text-1")
	// Poison: dead-lettered without a call.
	h.publish("events.ok.p1", `not json`, nil, "p-json")
	h.publish("events.ok.p2", `{"conversation_key":"x"}`, nil, "p-missing")
	h.publish("events.ok.p3", `{"input":"`+strings.Repeat("x", 65)+`"}`, nil, "p-large")
	h.publish("events.ok.p4", "{\"input\":\"\xff\"}", nil, "p-utf8")
	h.publish("events.ok.p5", `{"input":"hostile key"}`, nil, "../../admin")
	// Permanent answers: dead-lettered after one call.
	h.publish("events.locked.1", `{"input":"x"}`, nil, "locked-1")
	h.publish("events.missing.1", `{"input":"x"}`, nil, "missing-1")
	h.publish("events.bad.1", `{"input":"x"}`, nil, "bad-1")
	// Transient answers: retried with the same key, then accepted.
	h.publish("events.flaky.1", `{"input":"x"}`, nil, "flaky-1")
	h.publish("events.paused.1", `{"input":"x"}`, nil, "paused-1")
	// Retryable on every attempt: dead-lettered as max_attempts.
	h.publish("events.broken.1", `{"input":"x"}`, nil, "broken-1")

	testenv.Eventually(t, 10*time.Second, "409 retried", func() bool { return h.requestsFor("agtch_paused") >= 3 })
	if h.emu.Accepted("agtch_paused", "paused-1") != 0 {
		t.Fatal("accepted while not runnable")
	}
	h.emu.SetRunnable("agtch_paused", true)
	h.waitSettled(20*time.Second, "ok", "text", "paused", "flaky", "broken", "bad", "locked", "missing")

	// Acked, each exactly once.
	derived := fmt.Sprintf("%s:%d:", stream, seq)
	var derivedFound bool
	for _, e := range h.emu.Ledger() {
		if strings.HasPrefix(e.IdempotencyKey, derived) && e.Input == "no message id" {
			derivedFound = true
		}
	}
	if !derivedFound {
		t.Errorf("no ledger event with a derived key %s<ts>: %+v", derived, h.emu.Ledger())
	}
	for _, k := range []struct{ id, key string }{
		{"agtch_ok", "ok-1"}, {"agtch_ok", "replay-key-1"}, {"agtch_ok", "text-1"},
		{"agtch_flaky", "flaky-1"}, {"agtch_paused", "paused-1"},
	} {
		if n := h.emu.Accepted(k.id, k.key); n != 1 {
			t.Errorf("%s %s accepted %d times, want 1", k.id, k.key, n)
		}
	}
	if n := h.emu.Accepted("agtch_ok", "new-msg-id"); n != 0 {
		t.Errorf("explicit Idempotency-Key did not win over Nats-Msg-Id")
	}
	for _, e := range h.emu.Ledger() {
		if e.IdempotencyKey == "text-1" && (e.Input != "plain text input" || e.ConversationKey != "thread-9") {
			t.Errorf("text event: %+v", e)
		}
		if e.IdempotencyKey == "ok-1" && e.ConversationKey != "c-1" {
			t.Errorf("json event lost its conversation key: %+v", e)
		}
	}
	if got := h.emu.LedgerLen(); got != 6 {
		t.Errorf("ledger has %d events, want 6: %+v", got, h.emu.Ledger())
	}
	// The flaky event: 503, 429, 502, then 202, all with one key.
	if n := h.requestsFor("agtch_flaky"); n != 4 {
		t.Errorf("flaky: %d requests, want 4", n)
	}

	// Dead letters, with reasons and statuses.
	want := map[string]struct {
		reason deadletter.Reason
		status string
	}{
		"p-json":      {deadletter.ReasonInvalidJSON, ""},
		"p-missing":   {deadletter.ReasonMissingInput, ""},
		"p-large":     {deadletter.ReasonInputTooLarge, ""},
		"p-utf8":      {deadletter.ReasonInvalidUTF8, ""},
		"locked-1":    {deadletter.ReasonForbidden, "403"},
		"missing-1":   {deadletter.ReasonNotFound, "404"},
		"bad-1":       {deadletter.ReasonBadRequest, "400"},
		"broken-1":    {deadletter.ReasonMaxAttempts, "503"},
		"../../admin": {deadletter.ReasonInvalidIdempotencyKey, ""},
	}
	dls := h.deadLetters()
	if len(dls) != len(want) {
		t.Errorf("%d dead letters, want %d", len(dls), len(want))
	}
	for _, m := range dls {
		id := m.Header.Get(deadletter.HeaderOriginalPrefix + "Nats-Msg-Id")
		w, ok := want[id]
		if !ok {
			t.Errorf("unexpected dead letter %s: %v", id, m.Header)
			continue
		}
		if got := deadletter.Reason(m.Header.Get(deadletter.HeaderReason)); got != w.reason {
			t.Errorf("%s: reason %q, want %q", id, got, w.reason)
		}
		if got := m.Header.Get(deadletter.HeaderStatus); got != w.status {
			t.Errorf("%s: status %q, want %q", id, got, w.status)
		}
	}
	if b := h.deadLetterBy("broken-1"); b == nil || b.Header.Get(deadletter.HeaderAttempts) != "3" {
		t.Errorf("max_attempts dead letter should record 3 attempts: %v", b)
	}
	// Poison never reached the API; permanent answers were asked once.
	for _, id := range []string{"agtch_locked", "agtch_missing", "agtch_bad"} {
		if n := h.requestsFor(id); n != 1 {
			t.Errorf("%s: %d requests, want 1", id, n)
		}
	}
	if n := h.requestsFor("agtch_ok"); n != 4 {
		t.Errorf("agtch_ok saw %d requests, want 4 (poison must not be sent)", n)
	}
}

// A dead letter is the original body and headers plus why: reason, status,
// class, error, route, trigger, origin, attempts, time, and the key to
// replay with. Nats-* headers survive under their own names only.
func TestDeadLetterContent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_gone", true))
	h.emu.RevokeToken(tok)
	h.emu.AddToken(tok, "agtch_other") // valid, but not for agtch_gone: 403
	r := h.route("gone", "events.gone.>", h.agent("agtch_gone"))
	h.start(r)

	body := `{"input":"keep me exactly"}`
	ack := h.publish("events.gone.a.b", body, nats.Header{
		"X-Trace":              {"trace-1", "trace-2"},
		"Nats-Expected-Stream": {stream},
	}, "evt-77")
	h.waitSettled(10*time.Second, "gone")

	dls := h.deadLetters()
	if len(dls) != 1 {
		t.Fatalf("%d dead letters", len(dls))
	}
	m := dls[0]
	if m.Subject != "agentrelay.dlq.events.gone.a.b" {
		t.Errorf("subject %s", m.Subject)
	}
	if string(m.Data) != body {
		t.Errorf("body %q", m.Data)
	}
	hd := m.Header
	for k, want := range map[string]string{
		deadletter.HeaderReason:                                  "forbidden",
		deadletter.HeaderStatus:                                  "403",
		deadletter.HeaderClass:                                   "forbidden",
		deadletter.HeaderRoute:                                   "gone",
		deadletter.HeaderTriggerID:                               "agtch_gone",
		deadletter.HeaderStream:                                  stream,
		deadletter.HeaderSequence:                                strconv.FormatUint(ack.Sequence, 10),
		deadletter.HeaderSubject:                                 "events.gone.a.b",
		deadletter.HeaderAttempts:                                "1",
		event.HeaderIdempotencyKey:                               "evt-77",
		deadletter.HeaderOriginalPrefix + "Nats-Msg-Id":          "evt-77",
		deadletter.HeaderOriginalPrefix + "Nats-Expected-Stream": stream,
	} {
		if got := hd.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := hd.Values("X-Trace"); len(got) != 2 || got[0] != "trace-1" {
		t.Errorf("X-Trace = %v", got)
	}
	if !strings.Contains(hd.Get(deadletter.HeaderError), "403") {
		t.Errorf("error header %q", hd.Get(deadletter.HeaderError))
	}
	for _, k := range []string{deadletter.HeaderStoredAt, deadletter.HeaderDeadLetteredAt} {
		if _, err := time.Parse(time.RFC3339Nano, hd.Get(k)); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	// The copy's own Nats-Expected-Stream is the dead-letter stream's
	// (the publish asks for it), never the original's.
	if got := hd.Get("Nats-Expected-Stream"); got != dlStream {
		t.Errorf("Nats-Expected-Stream = %q, want %q", got, dlStream)
	}
	if !strings.HasPrefix(hd.Get("Nats-Msg-Id"), "agentrelay:gone:EVENTS:") {
		t.Errorf("dead letter id %q", hd.Get("Nats-Msg-Id"))
	}
}
