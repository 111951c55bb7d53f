package dlq

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/consumer"
)

func letter() Letter {
	h := nats.Header{}
	h.Set(consumer.HeaderReason, "forbidden")
	h.Set(consumer.HeaderStatus, "403")
	h.Set(consumer.HeaderRoute, "complaints")
	h.Set(consumer.HeaderSubject, "agents.complaints.new")
	h.Set(consumer.HeaderSequence, "41")
	h.Set(consumer.HeaderAttempts, "1")
	h.Set(consumer.HeaderIdempotencyKey, "evt-1")
	h.Set(consumer.HeaderOriginalPrefix+"Nats-Msg-Id", "evt-1")
	h.Set("Nats-Msg-Id", "agentrelay:complaints:S:41:1")
	h.Set("Nats-Expected-Stream", "AGENTRELAY_DLQ")
	h.Set("X-Trace", "t-1")
	return FromMsg(7, "agentrelay.dlq.agents.complaints.new", time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), h, []byte(`{"input":"x"}`))
}

func TestFromMsgReadsTheHeaders(t *testing.T) {
	l := letter()
	if l.Reason != "forbidden" || l.Status != 403 || l.Route != "complaints" || l.OrigSubject != "agents.complaints.new" ||
		l.StreamSeq != 41 || l.Attempts != 1 || l.IdempotencyKey != "evt-1" || l.Size != 13 {
		t.Errorf("%+v", l)
	}
}

func TestFilterMatch(t *testing.T) {
	l := letter()
	at := l.Stored
	rows := []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Route: "complaints"}, true},
		{Filter{Route: "other"}, false},
		{Filter{Reason: "forbidden", Status: 403}, true},
		{Filter{Reason: "max_attempts"}, false},
		{Filter{Status: 503}, false},
		{Filter{Subject: "agents.complaints.new"}, true},
		{Filter{Subject: "agents.*.new"}, true},
		{Filter{Subject: "agents.>"}, true},
		{Filter{Subject: "agents.complaints"}, false},
		{Filter{Subject: "agents.complaints.new.more"}, false},
		{Filter{Subject: ">"}, true},
		{Filter{Since: at}, true},
		{Filter{Since: at.Add(time.Second)}, false},
		{Filter{Until: at}, false},
		{Filter{Until: at.Add(time.Second)}, true},
		{Filter{Seqs: []uint64{3, 7}}, true},
		{Filter{Seqs: []uint64{3}}, false},
	}
	for _, r := range rows {
		if got := r.f.Match(l); got != r.want {
			t.Errorf("%+v: %v, want %v", r.f, got, r.want)
		}
	}
}

// A replay is the producer's message again: its body and own headers, the
// original Idempotency-Key, a pointer back to the dead letter, and nothing of
// the dead-letter bookkeeping or JetStream's control headers.
func TestReplayMsg(t *testing.T) {
	s := &Store{cfg: consumer.DeadLetterConfig{}.WithDefaults()}
	m, err := s.ReplayMsg(letter(), false)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "agents.complaints.new" || string(m.Data) != `{"input":"x"}` {
		t.Errorf("%s %s", m.Subject, m.Data)
	}
	want := nats.Header{
		"X-Trace":                     {"t-1"},
		consumer.HeaderIdempotencyKey: {"evt-1"},
		HeaderReplayOf:                {"AGENTRELAY_DLQ:7"},
	}
	if len(m.Header) != len(want) {
		t.Errorf("headers %v, want %v", m.Header, want)
	}
	for k, v := range want {
		if m.Header.Get(k) != v[0] {
			t.Errorf("%s = %q, want %q", k, m.Header.Get(k), v[0])
		}
	}
	m2, _ := s.ReplayMsg(letter(), true)
	m3, _ := s.ReplayMsg(letter(), true)
	if k := m2.Header.Get(consumer.HeaderIdempotencyKey); k == "evt-1" || k != m3.Header.Get(consumer.HeaderIdempotencyKey) {
		t.Errorf("--new-key gave %q then %q: want a new key, the same on every replay", k, m3.Header.Get(consumer.HeaderIdempotencyKey))
	}
	bare := letter()
	bare.OrigSubject = ""
	if _, err := s.ReplayMsg(bare, false); err == nil {
		t.Error("a dead letter without its original subject was replayed")
	}
}

// A dead letter whose key could not be used (invalid_idempotency_key) is
// replayed without it: the worker then keys it by the replay's message id,
// instead of dead-lettering it again for the same key.
func TestReplayLeavesOutAKeyThatCannotBeUsed(t *testing.T) {
	s := &Store{cfg: consumer.DeadLetterConfig{}.WithDefaults()}
	l := letter()
	l.IdempotencyKey = "bad/key"
	l.Header.Set(consumer.HeaderIdempotencyKey, "bad/key")
	m, err := s.ReplayMsg(l, false)
	if err != nil {
		t.Fatal(err)
	}
	if k := m.Header.Get(consumer.HeaderIdempotencyKey); k != "" {
		t.Errorf("replay carries the unusable key %q", k)
	}
}
