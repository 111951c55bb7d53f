package dlq

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/mapping"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

func letter() Letter {
	h := nats.Header{}
	h.Set(deadletter.HeaderReason, "forbidden")
	h.Set(deadletter.HeaderStatus, "403")
	h.Set(deadletter.HeaderRoute, "complaints")
	h.Set(deadletter.HeaderStream, "S")
	h.Set(deadletter.HeaderSubject, "agents.complaints.new")
	h.Set(deadletter.HeaderSequence, "41")
	h.Set(deadletter.HeaderAttempts, "1")
	h.Set(event.HeaderIdempotencyKey, "evt-1")
	h.Set(deadletter.HeaderOriginalPrefix+"Nats-Msg-Id", "evt-1")
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
	s := &Store{cfg: deadletter.Config{}.WithDefaults()}
	m, err := s.ReplayMsg(letter(), false)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "agents.complaints.new" || string(m.Data) != `{"input":"x"}` {
		t.Errorf("%s %s", m.Subject, m.Data)
	}
	want := nats.Header{
		"X-Trace":                       {"t-1"},
		event.HeaderIdempotencyKey:      {"evt-1"},
		deadletter.HeaderReplayOf:       {"AGENTRELAY_DLQ:7:1795867200000000000"},
		deadletter.HeaderReplayOrigin:   {"S:41"},
		deadletter.HeaderReplayCount:    {"1"},
		deadletter.HeaderReplayAttempts: {"1"},
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
	if k := m2.Header.Get(event.HeaderIdempotencyKey); k == "evt-1" || k != m3.Header.Get(event.HeaderIdempotencyKey) {
		t.Errorf("--new-key gave %q then %q: want a new key, the same on every replay", k, m3.Header.Get(event.HeaderIdempotencyKey))
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
	s := &Store{cfg: deadletter.Config{}.WithDefaults()}
	l := letter()
	l.IdempotencyKey = "bad/key"
	l.Header.Set(event.HeaderIdempotencyKey, "bad/key")
	m, err := s.ReplayMsg(l, false)
	if err != nil {
		t.Fatal(err)
	}
	if k := m.Header.Get(event.HeaderIdempotencyKey); k != "" {
		t.Errorf("replay carries the unusable key %q", k)
	}
}

// policy is the configuration letter() belongs to.
func policy() Policy {
	c := event.Contract{}.WithDefaults()
	return Policy{Routes: []Route{
		{Name: "complaints", Stream: "S", TriggerID: "agtch_c", Filters: []string{"agents.complaints.>"}, Contract: c},
		{Name: "refunds", Stream: "S", TriggerID: "agtch_r", Filters: []string{"agents.refunds.*", "agents.refunds.urgent.>"}, Contract: c},
		{Name: "whole", Stream: "W", TriggerID: "agtch_w", Filters: []string{">"}, Contract: c},
	}}
}

// forged is letter() claiming another subject, route and trigger, stored
// where a dead letter of that subject is stored.
func forged(subject, route, trigger string) Letter {
	l := letter()
	l.OrigSubject, l.Route, l.TriggerID = subject, route, trigger
	l.Subject = deadletter.Config{}.WithDefaults().Subject(subject)
	return l
}

func TestCheck(t *testing.T) {
	s := &Store{cfg: deadletter.Config{}.WithDefaults()}
	for _, tc := range []struct {
		name string
		l    Letter
		want string // "" to pass, else a part of the refusal
	}{
		{"its route's subject", forged("agents.complaints.new", "complaints", "agtch_c"), ""},
		{"one token wildcard", forged("agents.refunds.x", "refunds", "agtch_r"), ""},
		{"second filter", forged("agents.refunds.urgent.a.b", "refunds", "agtch_r"), ""},
		{"a route of every subject", forged("anything.at.all", "whole", "agtch_w"), ""},
		{"another route's subject", forged("agents.refunds.x", "complaints", "agtch_c"), "route complaints does not consume"},
		{"* is one token", forged("agents.refunds.x.y", "refunds", "agtch_r"), "route refunds does not consume"},
		{"> needs a token", forged("agents.complaints", "complaints", "agtch_c"), "does not consume"},
		{"unknown route", forged("agents.complaints.new", "nosuch", "agtch_c"), `no route "nosuch"`},
		{"no route", forged("agents.complaints.new", "", "agtch_c"), "no Agentrelay-Route"},
		{"other trigger", forged("agents.complaints.new", "complaints", "agtch_r"), `calls "agtch_c"`},
		{"no trigger", forged("agents.complaints.new", "complaints", ""), "trigger"},
		{"$JS purge", forged("$JS.API.STREAM.PURGE.S", "whole", "agtch_w"), "system subject"},
		{"$JS delete", forged("$JS.API.STREAM.DELETE.S", "whole", "agtch_w"), "system subject"},
		{"$SYS", forged("$SYS.REQ.SERVER.PING", "whole", "agtch_w"), "system subject"},
		{"$KV", forged("$KV.b.k", "whole", "agtch_w"), "system subject"},
		{"$O", forged("$O.b.C.x", "whole", "agtch_w"), "system subject"},
		{"any $", forged("$G.x", "whole", "agtch_w"), "system subject"},
		{"inbox", forged("_INBOX.abc.def", "whole", "agtch_w"), "system subject"},
		{"a role's inbox", forged("_INBOX_agentrelay_worker.abc.def", "whole", "agtch_w"), "system subject"},
		{"service reply", forged("_R_.abc.def", "whole", "agtch_w"), "system subject"},
		{"wildcard *", forged("agents.complaints.*", "complaints", "agtch_c"), "wildcard"},
		{"wildcard >", forged("agents.complaints.>", "complaints", "agtch_c"), "wildcard"},
		{"empty token", forged("agents.complaints..x", "complaints", "agtch_c"), "empty token"},
		{"leading dot", forged(".agents.complaints.x", "whole", "agtch_w"), "empty token"},
		{"trailing dot", forged("agents.complaints.x.", "complaints", "agtch_c"), "empty token"},
		{"space", forged("agents.complaints.a b", "complaints", "agtch_c"), "whitespace"},
		{"tab", forged("agents.complaints.a\tb", "complaints", "agtch_c"), "whitespace"},
		{"no-break space", forged("agents.complaints.a\u00a0b", "complaints", "agtch_c"), "whitespace"},
		{"ESC", forged("agents.complaints.a\x1b", "complaints", "agtch_c"), "control"},
		{"bidi", forged("agents.complaints.a\u202e", "complaints", "agtch_c"), "control"},
		{"invalid UTF-8", forged("agents.complaints.\xff", "complaints", "agtch_c"), "UTF-8"},
		{"no subject", forged("", "complaints", "agtch_c"), "no Agentrelay-Subject"},
		{"moved", func() Letter {
			l := forged("agents.complaints.new", "complaints", "agtch_c")
			l.Subject = "agentrelay.dlq.agents.complaints.other"
			return l
		}(), "moved or forged"},
	} {
		_, err := s.Check(t.Context(), policy(), tc.l)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want a refusal saying %q", tc.name, err, tc.want)
		}
	}
	p := policy()
	p.AllowTriggerChange = true
	if _, err := s.Check(t.Context(), p, forged("agents.complaints.new", "complaints", "agtch_old")); err != nil {
		t.Errorf("a corrected trigger id, allowed: %v", err)
	}
	if _, err := s.Check(t.Context(), policy(), forged("agents.complaints.new", "complaints", "agtch_old")); !errors.Is(err, ErrTriggerChanged) {
		t.Errorf("a corrected trigger id: %v, want ErrTriggerChanged", err)
	}
}

// The dead-letter subject a letter must sit on is the one
// DeadLetterConfig.Subject gives, whatever the configured prefix.
func TestCheckUsesTheDeadLetterSubjectMapping(t *testing.T) {
	cfg := deadletter.Config{SubjectPrefix: "ops.dead"}.WithDefaults()
	s := &Store{cfg: cfg}
	l := forged("agents.complaints.new", "complaints", "agtch_c")
	l.Subject = cfg.Subject(l.OrigSubject)
	if _, err := s.Check(t.Context(), policy(), l); err != nil {
		t.Errorf("a letter on its own subject: %v", err)
	}
	l.Subject = "agentrelay.dlq.agents.complaints.new"
	if _, err := s.Check(t.Context(), policy(), l); !errors.Is(err, ErrRefused) {
		t.Errorf("a letter on another prefix's subject: %v", err)
	}
}

// A re-created dead-letter stream numbers its letters from 1 again: the
// replay's message id and --new-key's key tell the new letter 1 from the
// old one, and stay the same for one letter.
func TestReplayIdentityIncludesTheStoredTime(t *testing.T) {
	s := &Store{cfg: deadletter.Config{}.WithDefaults()}
	old, renewed := letter(), letter()
	renewed.Stored = old.Stored.Add(time.Hour)
	if old.ID("D").ReplayMsgID() == renewed.ID("D").ReplayMsgID() {
		t.Error("the same replay id for two letters with the same sequence")
	}
	if same := old; old.ID("D").ReplayMsgID() != same.ID("D").ReplayMsgID() {
		t.Error("the replay id of one letter changes")
	}
	key := func(l Letter) string {
		m, err := s.ReplayMsg(l, true)
		if err != nil {
			t.Fatal(err)
		}
		return m.Header.Get(event.HeaderIdempotencyKey)
	}
	if key(old) == key(renewed) {
		t.Errorf("--new-key gives both letters %s", key(old))
	}
}

// Whatever the dead-letter stream is called, --new-key's key is valid.
func TestNewKeyIsAlwaysValid(t *testing.T) {
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, name := range []string{"AGENTRELAY_DLQ", "dlq#1", "dead$letters", "dlq-ü", "a/b", strings.Repeat("N", 255), strings.Repeat("ü", 127)} {
		k := NewKey(name, 18446744073709551615, at)
		if err := agentapi.ValidateIdempotencyKey(k); err != nil {
			t.Errorf("stream %q: key %q: %v", name, k, err)
		}
		if k == NewKey(name, 1, at) {
			t.Errorf("stream %q: two sequences, one key", name)
		}
	}
}

// A replay carries the event's history, and a dead letter of that replay
// (which keeps the Agentrelay-Replay-* headers) reads it back: the replays
// so far, every attempt, and where the event was first published, however
// often it went round.
func TestReplayHistoryAddsUp(t *testing.T) {
	s := &Store{cfg: deadletter.Config{}.WithDefaults()}
	l := letter() // first dead letter: S seq 41, 1 attempt
	for round := 1; round <= 3; round++ {
		m, err := s.ReplayMsg(l, false)
		if err != nil {
			t.Fatal(err)
		}
		// The worker dead-letters the replay again, 2 attempts, keeping
		// the replay headers of the message (deadletter.HeaderReplayPrefix).
		h := nats.Header{}
		for k, v := range m.Header {
			h[k] = v
		}
		h.Set(deadletter.HeaderStream, "S")
		h.Set(deadletter.HeaderSequence, fmt.Sprint(100+round))
		h.Set(deadletter.HeaderSubject, m.Subject)
		h.Set(deadletter.HeaderAttempts, "2")
		l = FromMsg(uint64(7+round), l.Subject, l.Stored.Add(time.Duration(round)*time.Minute), h, m.Data)
		if l.Replays != round || l.TotalAttempts() != 1+2*round || l.ReplayOf == "" {
			t.Errorf("round %d: replays %d, total attempts %d (want %d), replay of %q", round, l.Replays, l.TotalAttempts(), 1+2*round, l.ReplayOf)
		}
		if st, seq := l.Origin(); st != "S" || seq != 41 {
			t.Errorf("round %d: origin %s:%d, want S:41", round, st, seq)
		}
	}
}

// Poison letters go back only corrected or forced; a letter without its
// body only with a corrected one; and a corrected body must pass the
// route's contract.
func TestCheckPoisonAndOmittedBodies(t *testing.T) {
	s := &Store{cfg: deadletter.Config{}.WithDefaults()}
	poison := func(reason string) Letter {
		l := forged("agents.complaints.new", "complaints", "agtch_c")
		l.Reason = reason
		return l
	}
	omitted := forged("agents.complaints.new", "complaints", "agtch_c")
	omitted.BodyOmitted, omitted.Data = deadletter.BodyOmittedTooLarge, []byte{}
	forced := policy()
	forced.ForcePoison = true
	for _, tc := range []struct {
		name  string
		p     Policy
		l     Letter
		cause error // nil to pass
	}{
		{"forbidden", policy(), poison("forbidden"), nil},
		{"max_attempts", policy(), poison("max_attempts"), nil},
		{"invalid_json", policy(), poison("invalid_json"), ErrPoison},
		{"missing_input", policy(), poison("missing_input"), ErrPoison},
		{"input_too_large", policy(), poison("input_too_large"), ErrPoison},
		{"invalid_utf8", policy(), poison("invalid_utf8"), ErrPoison},
		{"invalid_idempotency_key", policy(), poison("invalid_idempotency_key"), ErrPoison},
		{"invalid_conversation_key", policy(), poison("invalid_conversation_key"), ErrPoison},
		{"invalid_cloudevent", policy(), poison("invalid_cloudevent"), ErrPoison},
		// A corrected mapping or allowed_trigger_ids makes these pass:
		// replaying them after the fix is the point.
		{"mapping_failed", policy(), poison("mapping_failed"), nil},
		{"trigger_not_allowed", policy(), poison("trigger_not_allowed"), nil},
		{"invalid_json, forced", forced, poison("invalid_json"), nil},
		{"invalid_json, corrected", policy(), poison("invalid_json").WithBody([]byte(`{"input":"fixed"}`)), nil},
		{"invalid_json, corrected but still bad", policy(), poison("invalid_json").WithBody([]byte(`{"inptu":"fixed"}`)), ErrPoison},
		{"invalid_json, corrected but still bad, forced", forced, poison("invalid_json").WithBody([]byte(`{`)), ErrPoison},
		{"body omitted", policy(), omitted, ErrBodyOmitted},
		{"body omitted, forced", forced, omitted, ErrBodyOmitted},
		{"body omitted, corrected", policy(), omitted.WithBody([]byte(`{"input":"the big one"}`)), nil},
	} {
		_, err := s.Check(t.Context(), tc.p, tc.l)
		switch {
		case tc.cause == nil && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.cause != nil && (!errors.Is(err, ErrRefused) || !errors.Is(err, tc.cause)):
			t.Errorf("%s: %v, want a refusal for %v", tc.name, err, tc.cause)
		}
	}
	if _, err := s.ReplayMsg(omitted, false); !errors.Is(err, ErrBodyOmitted) {
		t.Errorf("ReplayMsg built a replay of a letter without its body: %v", err)
	}
	m, err := s.ReplayMsg(omitted.WithBody([]byte(`{"input":"x"}`)), false)
	if err != nil || string(m.Data) != `{"input":"x"}` || m.Header.Get(deadletter.HeaderReplayBody) != "corrected" || m.Header.Get(event.HeaderIdempotencyKey) != "evt-1" {
		t.Errorf("corrected replay: %v %+v", err, m)
	}
}

// manyAgents is a policy with one route that serves many agents: the
// trigger id is the subject's second token, among agtch_support_*.
func manyAgents(t *testing.T) Policy {
	t.Helper()
	m, err := mapping.Compile(mapping.Spec{TriggerID: "tokens[1]"})
	if err != nil {
		t.Fatal(err)
	}
	c := event.Contract{Mapping: m, AllowedTriggerIDs: triggerglob.MustCompile("agtch_support_*")}.WithDefaults()
	return Policy{Routes: []Route{{Name: "agents", Stream: "S", Filters: []string{"agents.*.events"}, Contract: c}}}
}

// A route that serves many agents has no trigger of its own: a letter goes
// back to the agent it was for, if the route may still call it and its
// mapping still sends the event there. A letter refused before its trigger
// was known goes where the mapping sends it now.
func TestCheckOnARouteThatServesManyAgents(t *testing.T) {
	s := &Store{cfg: deadletter.Config{}.WithDefaults()}
	letterFor := func(id, subject, reason string) Letter {
		l := forged(subject, "agents", id)
		l.Reason = reason
		return l
	}
	allowChange := manyAgents(t)
	allowChange.AllowTriggerChange = true
	for _, tc := range []struct {
		name  string
		p     Policy
		l     Letter
		to    string // the trigger the replay goes to, when it passes
		cause error  // nil to pass
	}{
		{"its own agent", manyAgents(t), letterFor("agtch_support_eu", "agents.agtch_support_eu.events", "forbidden"), "agtch_support_eu", nil},
		{"no trigger known yet", manyAgents(t), letterFor("", "agents.agtch_support_us.events", "mapping_failed"), "agtch_support_us", nil},
		{"an id no longer allowed", manyAgents(t), letterFor("agtch_sales", "agents.agtch_sales.events", "forbidden"), "", ErrTriggerNotAllowed},
		{"an id no longer allowed, trigger change allowed", allowChange, letterFor("agtch_sales", "agents.agtch_sales.events", "forbidden"), "", ErrTriggerNotAllowed},
		{"mapped outside the allowed ids", manyAgents(t), letterFor("", "agents.agtch_sales.events", "trigger_not_allowed"), "", ErrTriggerNotAllowed},
		{"mapped to another agent now", manyAgents(t), letterFor("agtch_support_eu", "agents.agtch_support_us.events", "forbidden"), "", ErrTriggerChanged},
		{"mapped to another agent now, allowed", allowChange, letterFor("agtch_support_eu", "agents.agtch_support_us.events", "forbidden"), "agtch_support_us", nil},
		{"corrected, still bad", manyAgents(t), letterFor("agtch_support_eu", "agents.agtch_support_eu.events", "invalid_json").WithBody([]byte(`{"inptu":"x"}`)), "", ErrPoison},
		{"corrected", manyAgents(t), letterFor("agtch_support_eu", "agents.agtch_support_eu.events", "invalid_json").WithBody([]byte(`{"input":"x"}`)), "agtch_support_eu", nil},
	} {
		got, err := s.Check(t.Context(), tc.p, tc.l)
		switch {
		case tc.cause == nil && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.cause == nil && (got.TriggerID != tc.to || got.Route.Name != "agents"):
			t.Errorf("%s: replayed to route %q trigger %q, want agents, %s", tc.name, got.Route.Name, got.TriggerID, tc.to)
		case tc.cause != nil && (!errors.Is(err, ErrRefused) || !errors.Is(err, tc.cause)):
			t.Errorf("%s: %v, want a refusal for %v", tc.name, err, tc.cause)
		}
	}
	_, err := s.Check(t.Context(), manyAgents(t), letterFor("agtch_sales", "agents.agtch_sales.events", "forbidden"))
	if err == nil || !strings.Contains(err.Error(), `it was for trigger "agtch_sales", which route agents's allowed_trigger_ids (agtch_support_*) do not allow`) {
		t.Errorf("the refusal does not say why: %v", err)
	}
}

// Only invalid_cloudevent of the mapping work's reasons blames the message
// itself; every poison reason is one this version writes.
func TestPoisonReasons(t *testing.T) {
	for _, r := range PoisonReasons {
		if !slices.Contains(Reasons(), r) {
			t.Errorf("poison reason %s is not a reason", r)
		}
	}
	for r, want := range map[deadletter.Reason]bool{
		deadletter.ReasonInvalidCloudEvent: true, deadletter.ReasonMappingFailed: false, deadletter.ReasonTriggerNotAllowed: false,
	} {
		if got := slices.Contains(PoisonReasons, string(r)); got != want {
			t.Errorf("%s poison: %v, want %v", r, got, want)
		}
	}
}

// The key a dry run prints is the one the worker will use: the letter's,
// or the replay's message id when the letter has none usable.
func TestReplayKeyIsTheWorkersKey(t *testing.T) {
	s := &Store{cfg: deadletter.Config{}.WithDefaults()}
	l := letter()
	m, _ := s.ReplayMsg(l, false)
	if k, err := s.ReplayKey(l, m); err != nil || k != "evt-1" {
		t.Errorf("key %q, %v; want evt-1", k, err)
	}
	l.IdempotencyKey = "bad/key"
	m, _ = s.ReplayMsg(l, false)
	if k, err := s.ReplayKey(l, m); err != nil || k != l.ID(s.cfg.Stream).ReplayMsgID() {
		t.Errorf("key %q, %v; want the replay's message id", k, err)
	}
	// Whatever the dead-letter stream is called: a name a key may not
	// hold must not make the worker dead-letter the replay for its key.
	for _, name := range []string{"dead$letters", "dlq#1", "dlq-ü", strings.Repeat("N", 250)} {
		odd := &Store{cfg: deadletter.Config{Stream: name}.WithDefaults()}
		m, _ := odd.ReplayMsg(l, false)
		if k, err := odd.ReplayKey(l, m); err != nil || k != l.ID(name).ReplayMsgID() {
			t.Errorf("stream %.20q: key %q, %v; want the replay's message id, valid", name, k, err)
		}
	}
}
