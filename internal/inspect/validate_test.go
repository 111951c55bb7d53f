package inspect

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/internal/routestatus"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// goodAnswer is a replica's honest answer for an ordered route "r" stopped
// by an outage, listing two blocked keys.
func goodAnswer() routestatus.Answer {
	return routestatus.Answer{
		Replica: routestatus.Replica{ID: "abc", Name: "agentrelay", Host: "pod-1", ClientID: 7, Version: "v1"},
		Status: routestatus.Status{
			Route: "r", Health: "outage", Since: now.Add(-time.Minute), NextProbe: now.Add(5 * time.Second),
			Cause:    &routestatus.StopCause{Class: "server_error", Status: 503, Error: "503 Service Unavailable"},
			ProbeKey: "key-1", PausedBy: routestatus.PausedByRouteHealth, InFlight: 1, Limit: 64,
			Ordered: &routestatus.Ordered{Route: "r", PinID: "pin", Holding: 3, Running: 1, BlockedKeys: 5, Blocked: []routestatus.BlockedKey{
				{Key: "k1", Waiting: 2, OldestSeq: 9, Since: now.Add(-time.Second), WaitingSeconds: 1, BehindSeq: 4, BehindFailures: 2},
				{Key: "k2", Waiting: 1, OldestSeq: 11, Since: now, WaitingSeconds: 0},
			}},
			AgentsStopped: 3, Agents: []routestatus.Agent{
				{TriggerID: "agtch_legal", Health: "not_runnable", Since: now.Add(-time.Minute), NextProbe: now.Add(2 * time.Second),
					Cause: &routestatus.StopCause{Class: "not_runnable", Status: 409, Error: "409 Conflict"}, ProbeKey: "legal-1"},
			},
		},
	}
}

func answerMsg(t *testing.T, a any) *nats.Msg {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Data: b, Header: nats.Header{}}
}

func TestAnAnswerWithinItsBoundsIsBelieved(t *testing.T) {
	got := readAnswer(answerMsg(t, goodAnswer()), "r", 2, now)
	if got.Refused != "" || got.Status == nil || got.Status.Ordered.Blocked[1].Key != "k2" || got.Replica.Host != "pod-1" {
		t.Fatalf("an honest answer: %+v", got)
	}
}

// Every field is bounded: an answer that breaks one bound is refused as a
// whole, saying which, and still says whose it is.
func TestAnAnswerOutOfBoundsIsRefused(t *testing.T) {
	long := strings.Repeat("x", 2000)
	for _, tc := range []struct {
		name   string
		change func(*routestatus.Answer)
		want   string
	}{
		{"another route", func(a *routestatus.Answer) { a.Status.Route = "other" }, `for route "other"`},
		{"negative in flight", func(a *routestatus.Answer) { a.Status.InFlight = -3 }, "in_flight -3"},
		{"absurd limit", func(a *routestatus.Answer) { a.Status.Limit = math.MaxInt32 }, "limit 2147483647"},
		{"unknown health shape", func(a *routestatus.Answer) { a.Status.Health = "\x1b[2Jout" }, "health"},
		{"paused by whom", func(a *routestatus.Answer) { a.Status.PausedBy = "Me!" }, "paused_by"},
		{"since in the future", func(a *routestatus.Answer) { a.Status.Since = now.Add(time.Hour) }, "since"},
		{"next probe in a year", func(a *routestatus.Answer) { a.Status.NextProbe = now.Add(365 * 24 * time.Hour) }, "next_probe"},
		{"not an HTTP status", func(a *routestatus.Answer) { a.Status.Cause.Status = 42 }, "cause status 42"},
		{"a long error", func(a *routestatus.Answer) { a.Status.Cause.Error = long }, "cause error is 2000 bytes"},
		{"a long probe key", func(a *routestatus.Answer) { a.Status.ProbeKey = long }, "probe_key is 2000 bytes"},
		{"negative holding", func(a *routestatus.Answer) { a.Status.Ordered.Holding = -5 }, "holding -5"},
		{"negative running", func(a *routestatus.Answer) { a.Status.Ordered.Running = -1 }, "running -1"},
		{"fewer blocked than listed", func(a *routestatus.Answer) { a.Status.Ordered.BlockedKeys = 1 }, "fewer than the 2 keys listed"},
		{"more keys than asked", func(a *routestatus.Answer) {
			a.Status.Ordered.Blocked = append(a.Status.Ordered.Blocked, a.Status.Ordered.Blocked[0])
		}, "lists 3 blocked keys, and 2 were asked for"},
		{"a key with nothing waiting", func(a *routestatus.Answer) { a.Status.Ordered.Blocked[0].Waiting = 0 }, "no waiting event"},
		{"negative failures", func(a *routestatus.Answer) { a.Status.Ordered.Blocked[0].BehindFailures = -1 }, "behind_failures -1"},
		{"more agents stopped than listed", func(a *routestatus.Answer) { a.Status.AgentsStopped = 0 }, "agents_stopped 0 is fewer than the 1 agent listed"},
		{"negative agents stopped", func(a *routestatus.Answer) { a.Status.AgentsStopped = -1 }, "agents_stopped -1"},
		{"too many agents listed", func(a *routestatus.Answer) {
			for range routestatus.MaxAgentsListed {
				a.Status.Agents = append(a.Status.Agents, a.Status.Agents[0])
			}
			a.Status.AgentsStopped = 100
		}, "lists 21 stopped agents, more than 20"},
		{"an agent with no id", func(a *routestatus.Answer) { a.Status.Agents[0].TriggerID = "" }, "no trigger_id"},
		{"a long agent id", func(a *routestatus.Answer) { a.Status.Agents[0].TriggerID = long }, "agent trigger_id is 2000 bytes"},
		{"an agent's health shape", func(a *routestatus.Answer) { a.Status.Agents[0].Health = "Sick!" }, "agent health"},
		{"an agent's cause status", func(a *routestatus.Answer) { a.Status.Agents[0].Cause.Status = 7 }, "cause status 7"},
		{"an agent's long error", func(a *routestatus.Answer) { a.Status.Agents[0].Cause.Error = long }, "cause error is 2000 bytes"},
		{"an agent stopped in the future", func(a *routestatus.Answer) { a.Status.Agents[0].Since = now.Add(time.Hour) }, "agent since"},
		{"an agent's probe key", func(a *routestatus.Answer) { a.Status.Agents[0].ProbeKey = long }, "agent probe_key is 2000 bytes"},
		{"waiting for ever", func(a *routestatus.Answer) { a.Status.Ordered.Blocked[0].WaitingSeconds = 1e300 }, "waiting_seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := goodAnswer()
			tc.change(&a)
			got := readAnswer(answerMsg(t, a), "r", 2, now)
			if got.Status != nil || !strings.Contains(got.Refused, tc.want) || got.Replica.ID != "abc" {
				t.Errorf("refused %q (status %v, replica %q), want a refusal saying %q, naming the replica", got.Refused, got.Status, got.Replica.ID, tc.want)
			}
		})
	}
}

func TestAnAnswerTooLargeIsNotDecoded(t *testing.T) {
	a := goodAnswer()
	a.Status.Ordered.Blocked = nil
	for i := range 5000 {
		a.Status.Ordered.Blocked = append(a.Status.Ordered.Blocked, routestatus.BlockedKey{Key: strings.Repeat("k", 100) + string(rune('a'+i%26)), Waiting: 1, OldestSeq: 1})
	}
	got := readAnswer(answerMsg(t, a), "r", 10, now)
	if got.Status != nil || !strings.Contains(got.Refused, "more than an answer listing 10 keys can be") || got.Replica.ID != "abc" {
		t.Errorf("a 5,000-key answer: %+v", got.Refused)
	}
}

// Who a replica says it is gets sanitised: it is printed.
func TestWhoAnsweredIsSanitised(t *testing.T) {
	a := goodAnswer()
	a.Replica.Host = "evil\x1b]0;pwned\x07"
	got := readAnswer(answerMsg(t, a), "r", 2, now)
	if strings.ContainsAny(got.Replica.Host, "\x1b\x07") || got.Status == nil {
		t.Errorf("host %q kept its escape sequence (refused %q)", got.Replica.Host, got.Refused)
	}
	a.Replica.ID = ""
	if got := readAnswer(answerMsg(t, a), "r", 2, now); got.Status != nil {
		t.Error("an answer that does not say whose it is was believed")
	}
}

func TestAnErrorAnswerIsShownAsOne(t *testing.T) {
	m := &nats.Msg{Header: nats.Header{"Nats-Service-Error-Code": {"413"}, "Nats-Service-Error": {"request body over 1024 bytes"}}}
	if got := readAnswer(m, "r", 2, now); got.Error != "413 request body over 1024 bytes" || got.Status != nil {
		t.Errorf("an error answer: %+v", got)
	}
}

// An agent's id is printed: it is sanitised like everything else said.
func TestAStoppedAgentsIDIsSanitised(t *testing.T) {
	a := goodAnswer()
	a.Status.Agents[0].TriggerID = "agtch_\x1b[31mred"
	got := readAnswer(answerMsg(t, a), "r", 2, now)
	if got.Status == nil || strings.ContainsRune(got.Status.Agents[0].TriggerID, 0x1b) {
		t.Errorf("agent id %+v (refused %q) kept its escape", got.Status, got.Refused)
	}
}

// The largest honest answer, with every stopped agent listed at its
// bounds, is read, not refused for its size.
func TestTheLargestHonestAnswerIsRead(t *testing.T) {
	a := goodAnswer()
	a.Status.Ordered.Blocked = nil
	a.Status.Ordered.BlockedKeys = 0
	a.Status.Agents = nil
	for i := range routestatus.MaxAgentsListed {
		a.Status.Agents = append(a.Status.Agents, routestatus.Agent{
			TriggerID: strings.Repeat("\x01", maxIDLen/6) + string(rune('a'+i)), Health: "outage",
			Cause:    &routestatus.StopCause{Class: "timeout", Error: strings.Repeat("\x01", maxErrorLen/6)},
			ProbeKey: strings.Repeat("\x01", maxKeyLen/6),
		})
	}
	a.Status.AgentsStopped = 10_000
	if got := readAnswer(answerMsg(t, a), "r", 0, now); got.Status == nil {
		t.Errorf("the largest honest answer was refused: %s", got.Refused)
	}
}

func TestConditionTextSaysWhy(t *testing.T) {
	a := goodAnswer()
	got := ConditionText(&a.Status)
	want := "outage since 2026-01-02T03:03:05Z (server_error, 503: 503 Service Unavailable), probing with key key-1, next probe 2026-01-02T03:04:10Z, paused by route health"
	if got != want {
		t.Errorf("ConditionText:\n got %s\nwant %s", got, want)
	}
	got = AgentConditionText(&a.Status.Agents[0])
	want = "agtch_legal: not_runnable since 2026-01-02T03:03:05Z (not_runnable, 409: 409 Conflict), probing with key legal-1, next probe 2026-01-02T03:04:07Z"
	if got != want {
		t.Errorf("AgentConditionText:\n got %s\nwant %s", got, want)
	}
}
