package faultsuite

import (
	"strings"
	"testing"
)

// A small manifest with one event of each kind, and a run in which each had
// exactly the outcome it must.
func cleanRun() ([]Event, Observed) {
	manifest := []Event{
		{MsgID: "ok-1", Key: "ok-1", TriggerID: "agtch_ok", Input: "in ok-1", Kind: KindAccept, ConversationKey: "c"},
		{MsgID: "ok-2", Key: "ok-2", TriggerID: "agtch_ok", Input: "in ok-2", Kind: KindAccept, ConversationKey: "c"},
		{MsgID: "paused-1", Key: "paused-1", TriggerID: "agtch_paused", Input: "in paused-1", Kind: KindNotRunnable},
		{MsgID: "poison-1", Key: "poison-1", TriggerID: "agtch_ok", Input: "", Kind: KindDeadLetter, WantReason: "invalid_json"},
		{MsgID: "bad/key", Key: "", TriggerID: "agtch_ok", Input: "in bad key", Kind: KindDeadLetter, WantReason: "invalid_idempotency_key"},
		{MsgID: "locked-1", Key: "locked-1", TriggerID: "agtch_locked", Input: "in locked-1", Kind: KindDeadLetter, WantReason: "forbidden"},
	}
	obs := Observed{
		Ledger: []Accepted{
			{TriggerID: "agtch_ok", Key: "ok-1", Input: "in ok-1"},
			{TriggerID: "agtch_ok", Key: "ok-2", Input: "in ok-2"},
			{TriggerID: "agtch_paused", Key: "paused-1", Input: "in paused-1"},
		},
		Requests: []Request{
			{TriggerID: "agtch_ok", Key: "ok-1", Input: "in ok-1", Status: 503},
			{TriggerID: "agtch_ok", Key: "ok-1", Input: "in ok-1", Status: 0},   // accepted, answer dropped
			{TriggerID: "agtch_ok", Key: "ok-1", Input: "in ok-1", Status: 202}, // the replay
			{TriggerID: "agtch_ok", Key: "ok-2", Input: "in ok-2", Status: 202},
			{TriggerID: "agtch_paused", Key: "paused-1", Input: "in paused-1", Status: 409},
			{TriggerID: "agtch_paused", Key: "paused-1", Input: "in paused-1", Status: 202},
			{TriggerID: "agtch_locked", Key: "locked-1", Input: "in locked-1", Status: 403},
		},
		DeadLetters: []DeadLetter{
			{OriginalMsgID: "poison-1", Key: "poison-1", Reason: "invalid_json"},
			{OriginalMsgID: "bad/key", Key: "", Reason: "invalid_idempotency_key"},
			{OriginalMsgID: "locked-1", Key: "locked-1", Reason: "forbidden"},
		},
		Consumers: []ConsumerState{{Name: "agentrelay-ok"}, {Name: "agentrelay-paused"}},
	}
	return manifest, obs
}

func TestCheckPassesACleanRunAndCountsIt(t *testing.T) {
	manifest, obs := cleanRun()
	r := Check(manifest, obs, Options{})
	if !r.OK() {
		t.Fatalf("clean run failed:\n%s", strings.Join(r.Problems(), "\n"))
	}
	if r.Events != 6 || r.ByKind[KindAccept] != 2 || r.ByKind[KindNotRunnable] != 1 || r.ByKind[KindDeadLetter] != 3 {
		t.Errorf("events %d by kind %v", r.Events, r.ByKind)
	}
	if r.AcceptedOnce != 3 || r.NotRunnableRetried != 1 || r.Requests != 7 || r.RequestsByStatus[202] != 3 {
		t.Errorf("accepted once %d, 409 then accepted %d, requests %d %v", r.AcceptedOnce, r.NotRunnableRetried, r.Requests, r.RequestsByStatus)
	}
	if r.DeadLettered["invalid_json"] != 1 || r.DeadLettered["forbidden"] != 1 || r.DeadLettered["invalid_idempotency_key"] != 1 {
		t.Errorf("dead-lettered %v", r.DeadLettered)
	}
	for _, want := range []string{"events:            6", "lost:              0", "accepted twice:    0", "forbidden=1"} {
		if !strings.Contains(r.String(), want) {
			t.Errorf("figures lack %q:\n%s", want, r.String())
		}
	}
}

// Each broken invariant, introduced into an otherwise clean run, fails the
// check with a problem that names the event.
func TestCheckCatchesEveryBrokenInvariant(t *testing.T) {
	rows := []struct {
		name   string
		breakf func(m []Event, o *Observed)
		want   string // in one of the problems
	}{
		{"an accepted event is lost", func(_ []Event, o *Observed) {
			o.Ledger = o.Ledger[1:] // ok-1 never accepted
		}, "lost: ok-1"},
		{"an event is accepted twice under its key", func(_ []Event, o *Observed) {
			o.Ledger = append(o.Ledger, Accepted{TriggerID: "agtch_ok", Key: "ok-2", Input: "in ok-2"})
		}, "accepted more than once: ok-2 (2 times)"},
		{"a retry carries another key and is accepted again", func(_ []Event, o *Observed) {
			o.Requests = append(o.Requests, Request{TriggerID: "agtch_ok", Key: "ok-2-retry", Input: "in ok-2", Status: 202})
			o.Ledger = append(o.Ledger, Accepted{TriggerID: "agtch_ok", Key: "ok-2-retry", Input: "in ok-2"})
		}, "accepted more than once: ok-2 (2 times)"},
		{"a retry carries another key", func(_ []Event, o *Observed) {
			o.Requests = append(o.Requests, Request{TriggerID: "agtch_ok", Key: "ok-2-retry", Input: "in ok-2", Status: 503})
		}, `ok-2: a request carried key "ok-2-retry" instead of "ok-2"`},
		{"the API accepts something never published", func(_ []Event, o *Observed) {
			o.Ledger = append(o.Ledger, Accepted{TriggerID: "agtch_ok", Key: "ghost", Input: "ghost"})
		}, "never published"},
		{"poison reaches the API", func(_ []Event, o *Observed) {
			o.Requests = append(o.Requests, Request{TriggerID: "agtch_ok", Key: "bad-key", Input: "in bad key", Status: 202})
		}, "bad/key: poison with an invalid idempotency key reached the API"},
		{"a dead letter has the wrong reason", func(_ []Event, o *Observed) {
			o.DeadLetters[2].Reason = "max_attempts"
		}, "locked-1: dead-lettered as max_attempts, want forbidden"},
		{"an event that must be dead-lettered is missing", func(_ []Event, o *Observed) {
			o.DeadLetters = o.DeadLetters[1:]
		}, "lost: poison-1 (must be dead-lettered as invalid_json)"},
		{"an event is dead-lettered twice", func(_ []Event, o *Observed) {
			o.DeadLetters = append(o.DeadLetters, o.DeadLetters[0])
		}, "poison-1: dead-lettered 2 times"},
		{"an event that must be accepted is dead-lettered", func(_ []Event, o *Observed) {
			o.Ledger = o.Ledger[1:]
			o.DeadLetters = append(o.DeadLetters, DeadLetter{OriginalMsgID: "ok-1", Key: "ok-1", Reason: "max_attempts"})
		}, "ok-1: dead-lettered (max_attempts) instead of accepted"},
		{"a refused event is accepted", func(_ []Event, o *Observed) {
			o.Ledger = append(o.Ledger, Accepted{TriggerID: "agtch_locked", Key: "locked-1", Input: "in locked-1"})
		}, "locked-1: accepted, but must be dead-lettered as forbidden"},
		{"a not-runnable event is dead-lettered", func(_ []Event, o *Observed) {
			o.DeadLetters = append(o.DeadLetters, DeadLetter{OriginalMsgID: "paused-1", Key: "paused-1", Reason: "max_attempts"})
		}, "paused-1: accepted and also dead-lettered (max_attempts)"},
		{"an ordered conversation is accepted out of order", func(_ []Event, o *Observed) {
			o.Ledger[0], o.Ledger[1] = o.Ledger[1], o.Ledger[0]
		}, "ok-1: conversation c reordered: accepted after ok-2, which was published later"},
		{"two calls at once for one conversation", func(_ []Event, o *Observed) {
			o.KeyOverlaps = []string{"c (in ok-2 from worker 1)"}
		}, "two calls at once for one conversation of an ordered route: c (in ok-2 from worker 1)"},
		{"a dead letter loses the key", func(_ []Event, o *Observed) {
			o.DeadLetters[0].Key = ""
		}, `poison-1: dead letter carries Idempotency-Key "", want "poison-1"`},
		{"a dead letter of nothing published", func(_ []Event, o *Observed) {
			o.DeadLetters = append(o.DeadLetters, DeadLetter{OriginalMsgID: "ghost", Reason: "invalid_json"})
		}, `a dead letter for no published event: original message id "ghost"`},
		{"a consumer still owes messages", func(_ []Event, o *Observed) {
			o.Consumers[1].AckPending = 2
		}, "consumer agentrelay-paused still owes 0 pending and 2 ack-pending messages"},
		{"the manifest reuses a message id", func(m []Event, _ *Observed) {
			m[1].MsgID = "ok-1"
		}, `manifest: message id "ok-1" used twice`},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			manifest, obs := cleanRun()
			row.breakf(manifest, &obs)
			r := Check(manifest, obs, Options{})
			if r.OK() {
				t.Fatalf("check passed; want a problem containing %q", row.want)
			}
			for _, p := range r.Problems() {
				if strings.Contains(p, row.want) {
					return
				}
			}
			t.Errorf("no problem contains %q; got:\n%s", row.want, strings.Join(r.Problems(), "\n"))
		})
	}
}

// An event accepted once and also dead-lettered as max_attempts is neither
// lost nor fired twice. It fails a run whose retry budget cannot run out,
// and passes only when the option allows it, only for max_attempts and only
// when the acceptance was single.
func TestCheckAllowsADeadLetterAfterAcceptOnlyWhenAskedAndOnlyOnce(t *testing.T) {
	withDL := func(reason string, extraAccept bool) ([]Event, Observed) {
		m, o := cleanRun()
		o.DeadLetters = append(o.DeadLetters, DeadLetter{OriginalMsgID: "ok-1", Key: "ok-1", Reason: reason})
		if extraAccept {
			o.Ledger = append(o.Ledger, o.Ledger[0])
		}
		return m, o
	}
	m, o := withDL("max_attempts", false)
	if r := Check(m, o, Options{}); r.OK() {
		t.Error("accepted and dead-lettered passed without the allowance")
	}
	if r := Check(m, o, Options{AllowDeadLetterAfterAccept: true}); !r.OK() || r.AcceptedAndDeadLettered != 1 {
		t.Errorf("allowed case failed (%d counted): %v", r.AcceptedAndDeadLettered, r.Problems())
	}
	m, o = withDL("forbidden", false)
	if r := Check(m, o, Options{AllowDeadLetterAfterAccept: true}); r.OK() {
		t.Error("an accepted event dead-lettered as forbidden passed")
	}
	m, o = withDL("max_attempts", true)
	if r := Check(m, o, Options{AllowDeadLetterAfterAccept: true}); r.OK() || len(r.Duplicated) != 1 {
		t.Errorf("a double fire passed under the allowance: %v", r.Problems())
	}
}

// An event that may end either way (accepted once, or dead-lettered with its
// reason) passes with one outcome, is counted by the one it had, and fails
// with both, with neither, twice, or with another reason or class.
func TestCheckJudgesAnEventThatMayEndEitherWay(t *testing.T) {
	either := Event{MsgID: "hang-1", Key: "hang-1", TriggerID: "agtch_hang", Input: "in hang-1", Kind: KindAcceptOrDeadLetter,
		WantReason: "max_attempts", WantClass: "timeout"}
	accepted := Accepted{TriggerID: "agtch_hang", Key: "hang-1", Input: "in hang-1"}
	dead := DeadLetter{OriginalMsgID: "hang-1", Key: "hang-1", Reason: "max_attempts", Class: "timeout"}
	run := func(ledger []Accepted, dls []DeadLetter) Report {
		manifest, obs := cleanRun()
		manifest = append(manifest, either)
		obs.Ledger = append(obs.Ledger, ledger...)
		obs.DeadLetters = append(obs.DeadLetters, dls...)
		return Check(manifest, obs, Options{AllowDeadLetterAfterAccept: true})
	}
	if r := run([]Accepted{accepted}, nil); !r.OK() || r.EitherAccepted != 1 || r.EitherDeadLettered != 0 || !strings.Contains(r.String(), "1 accepted once, 0 dead-lettered") {
		t.Errorf("accepted once: %v, counted %d accepted %d dead-lettered\n%s", r.Problems(), r.EitherAccepted, r.EitherDeadLettered, r.String())
	}
	if r := run(nil, []DeadLetter{dead}); !r.OK() || r.EitherAccepted != 0 || r.EitherDeadLettered != 1 {
		t.Errorf("dead-lettered: %v, counted %d accepted %d dead-lettered", r.Problems(), r.EitherAccepted, r.EitherDeadLettered)
	}
	wrongClass := dead
	wrongClass.Class = "server_error"
	rows := []struct {
		name   string
		ledger []Accepted
		dls    []DeadLetter
		want   string
	}{
		{"neither", nil, nil, "lost: hang-1 (accepted or dead-lettered as max_attempts, trigger agtch_hang)"},
		{"both, even under AllowDeadLetterAfterAccept", []Accepted{accepted}, []DeadLetter{dead}, "hang-1: accepted and also dead-lettered (max_attempts); it must be one or the other"},
		{"accepted twice", []Accepted{accepted, accepted}, nil, "accepted more than once: hang-1 (2 times)"},
		{"dead-lettered twice", nil, []DeadLetter{dead, dead}, "hang-1: dead-lettered 2 times"},
		{"another reason", nil, []DeadLetter{{OriginalMsgID: "hang-1", Key: "hang-1", Reason: "forbidden"}}, "hang-1: dead-lettered as forbidden, want max_attempts"},
		{"another class", nil, []DeadLetter{wrongClass}, `hang-1: dead letter says status "" class "server_error", want status "" class "timeout"`},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			r := run(row.ledger, row.dls)
			if r.OK() {
				t.Fatalf("check passed; want a problem containing %q", row.want)
			}
			for _, p := range r.Problems() {
				if strings.Contains(p, row.want) {
					return
				}
			}
			t.Errorf("no problem contains %q; got:\n%s", row.want, strings.Join(r.Problems(), "\n"))
		})
	}
}
