package consumer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/deadletter"
)

// The repro end to end: poison messages with a 4 KiB subject, 64 KiB
// of headers or a body near max_payload are dead-lettered by a running
// relay; its connection stays up and the route goes on to the next message.
func TestHostileOriginalsAreDeadLetteredWithoutStallingTheRoute(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_hostile", true))
	r := h.route("hostile", "events.hostile.>", h.agent("agtch_hostile"))
	run := h.start(r)
	maxPayload := int(h.nats.NC.MaxPayload())
	longSubject := "events.hostile." + strings.Repeat("b", 4025)
	big := strings.Repeat("h", 65200-len("NATS/1.0\r\n\r\n")-len("X-Big: \r\n")-len("Nats-Msg-Id: hostile-2\r\n"))
	for _, m := range []*nats.Msg{
		{Subject: longSubject, Data: []byte("not json")},
		{Subject: "events.hostile.big", Data: []byte("not json"), Header: nats.Header{"X-Big": {big}, "Nats-Msg-Id": {"hostile-2"}}},
		{Subject: "events.hostile.huge", Data: []byte(strings.Repeat("x", maxPayload-100)), Header: nats.Header{"Nats-Msg-Id": {"hostile-3"}}},
	} {
		if err := h.nats.NC.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	h.publish("events.hostile.ok", `{"input":"after the hostile ones"}`, nil, "ok-1")
	h.waitSettled(20*time.Second, "hostile")

	if !run.nc.IsConnected() {
		t.Fatal("the relay's connection was closed")
	}
	if got := h.emu.Accepted("agtch_hostile", "ok-1"); got != 1 {
		t.Errorf("the message after the hostile ones was accepted %d times", got)
	}
	got := map[string]*jetstream.RawStreamMsg{}
	for _, m := range h.deadLetters() {
		got[m.Header.Get(deadletter.HeaderSubject)] = m
	}
	if len(got) != 3 {
		t.Fatalf("%d dead letters, want 3", len(got))
	}
	for subject, form := range map[string]string{
		longSubject:           "full",
		"events.hostile.big":  "trimmed",
		"events.hostile.huge": "trimmed",
	} {
		m := got[subject]
		if m == nil {
			t.Errorf("no dead letter for %.40s…", subject)
			continue
		}
		if f := m.Header.Get(deadletter.HeaderLetterForm); f != form {
			t.Errorf("%.40s…: form %q, want %q", subject, f, form)
		}
		if m.Header.Get(deadletter.HeaderRoute) != "hostile" || m.Header.Get(deadletter.HeaderReason) != string(deadletter.ReasonInvalidJSON) ||
			m.Header.Get(deadletter.HeaderStream) != stream || m.Header.Get(deadletter.HeaderSequence) == "" {
			t.Errorf("%.40s…: facts lost: %v", subject, m.Header)
		}
		if m.Subject != (deadletter.Config{}).WithDefaults().Subject(subject) {
			t.Errorf("%.40s…: letter subject %.60q", subject, m.Subject)
		}
	}
	if metricValue(t, run, "agentrelay_dead_letter_publish_failures_total", "hostile") != 0 {
		t.Error("dead-letter publishes failed on the way")
	}
}
