package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// Dead-letter replay surprises (issue 12): what a replay that fails again,
// a poison letter and a letter stored without its body do.

// lettersJSON runs `dlq list --json` and returns what it printed.
func (s *stack) lettersJSON(args ...string) []letterJSON {
	s.t.Helper()
	code, out, errOut := s.cli("", append([]string{"dlq", "list", "--json"}, args...)...)
	if code != 0 {
		s.t.Fatalf("dlq list --json: %d %s", code, errOut)
	}
	var ls []letterJSON
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var l letterJSON
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			s.t.Fatalf("%v: %s", err, line)
		}
		ls = append(ls, l)
	}
	return ls
}

// A replay that fails again is dead-lettered with its history: the new
// letter says it is a replay (of which letter), where the event was first
// published, and counts the replays and every attempt. `dlq list` shows a
// replay loop for what it is.
func TestReplayThatFailsAgainKeepsItsHistory(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.publish("work.locked.x", `{"input":"again"}`, "hist-1")
	s.settled("locked")
	first := s.lettersJSON()
	if len(first) != 1 || first[0].Replays != 0 || first[0].TotalAttempts != 1 {
		t.Fatalf("first letter: %+v", first)
	}
	origin := first[0].StreamSeq

	for round := 1; round <= 2; round++ {
		if code, out, errOut := s.cli("", "dlq", "replay"); code != 0 {
			t.Fatalf("replay %d: %d %s%s", round, code, out, errOut)
		}
		s.settled("locked")
		ls := s.lettersJSON()
		if len(ls) != 1 {
			t.Fatalf("round %d: %d letters", round, len(ls))
		}
		l := ls[0]
		if l.Replays != round || l.TotalAttempts != 1+round || l.Attempts != 1 ||
			l.OriginStream != stream || l.OriginSeq != origin || !strings.HasPrefix(l.ReplayOf, dlqName+":") ||
			l.IdempotencyKey != "hist-1" || l.StreamSeq == origin {
			t.Errorf("round %d: letter %+v; want %d replays, %d attempts in all, origin %s:%d, key hist-1", round, l, round, 1+round, stream, origin)
		}
	}
	code, out, _ := s.cli("", "dlq", "list", "--preview", "0")
	if code != 0 {
		t.Fatalf("dlq list: %d", code)
	}
	golden(t, "dlq_list_replayed_twice", trimTrailing(out))
	code, out, _ = s.cli("", "dlq", "show", fmt.Sprint(s.lettersJSON()[0].Seq))
	out = squash(out)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("replays 2; this letter is of the replay of dead letter %s:", dlqName)) ||
		!strings.Contains(out, fmt.Sprintf("first published as %s seq %d", stream, origin)) ||
		!strings.Contains(out, "attempts 1 (3 over the event's 2 replays)") {
		t.Errorf("dlq show does not tell the history:\n%s", out)
	}
	if n := s.emu.Stats().ByStatus[403]; n != 3 {
		t.Errorf("%d calls, want 3 (once, and two replays)", n)
	}
}

// Poison letters are not replayed unchanged (they would come straight back)
// unless forced; a corrected body replays one letter with its key, once the
// route's contract accepts it.
func TestPoisonLettersNeedACorrectedBodyOrForce(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	// One after the other, each until its letter is stored, so that the
	// letters' order is known. (The consumer's counts alone can read
	// settled before they count a message just published.)
	s.publish("work.ok.x", `{"conversation_key":"c-1"}`, "poison-1")
	testenv.Eventually(t, 20*time.Second, "the first letter stored", func() bool { return s.dlqCount() == 1 })
	s.publish("work.ok.y", `not json`, "poison-2")
	testenv.Eventually(t, 20*time.Second, "the second letter stored", func() bool { return s.dlqCount() == 2 })
	s.settled("ok")
	ls := s.lettersJSON()
	if len(ls) != 2 || ls[0].Reason != "missing_input" || ls[1].Reason != "invalid_json" {
		t.Fatalf("letters: %+v", ls)
	}
	fixSeq, forceSeq := fmt.Sprint(ls[0].Seq), fmt.Sprint(ls[1].Seq)

	code, out, _ := s.cli("", "dlq", "replay", "--dry-run")
	golden(t, "dlq_replay_poison_dry_run", out)
	if code != 0 {
		t.Errorf("dry run: %d", code)
	}
	if code, out, _ := s.cli("", "dlq", "replay"); code != 1 || strings.Count(out, "refused") != 3 || s.dlqCount() != 2 {
		t.Fatalf("replay of poison letters: %d (%d left)\n%s", code, s.dlqCount(), out)
	}

	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stillBad := write("still-bad.json", `{"conversation_key":"c-1"}`)
	fixed := write("fixed.json", `{"input":"typo fixed","conversation_key":"c-1"}`)
	if code, out, _ := s.cli("", "dlq", "replay", fixSeq, "--body-file", stillBad); code != 1 || !strings.Contains(out, "the corrected body would be dead-lettered again by route ok: missing_input") {
		t.Errorf("a corrected body that is still poison: %d\n%s", code, out)
	}
	if code, _, errOut := s.cli("", "dlq", "replay", "--body-file", fixed); code != ExitConfig || !strings.Contains(errOut, "exactly one") {
		t.Errorf("--body-file without one letter: %d %s", code, errOut)
	}
	code, out, _ = s.cli("", "dlq", "replay", fixSeq, "--body-file", fixed, "--dry-run")
	if code != 0 || !strings.Contains(out, "with the corrected body (47 bytes) with Idempotency-Key poison-1") {
		t.Errorf("dry run with a corrected body: %d\n%s", code, out)
	}
	if code, out, errOut := s.cli("", "dlq", "replay", fixSeq, "--body-file", fixed); code != 0 || !strings.Contains(out, "replayed 1 dead letter in ") {
		t.Fatalf("replay with a corrected body: %d\n%s%s", code, out, errOut)
	}
	s.settled("ok")
	if n := s.emu.Accepted(okID, "poison-1"); n != 1 {
		t.Errorf("the corrected event was accepted %d times under its own key, want 1", n)
	}
	if !strings.Contains(fmt.Sprint(s.emu.Ledger()), "typo fixed") {
		t.Error("the API did not get the corrected input")
	}

	// --force replays the other as it is: straight back, with its history.
	if code, out, errOut := s.cli("", "dlq", "replay", forceSeq, "--force"); code != 0 {
		t.Fatalf("replay --force: %d\n%s%s", code, out, errOut)
	}
	s.settled("ok")
	ls = s.lettersJSON()
	if len(ls) != 1 || ls[0].Reason != "invalid_json" || ls[0].Replays != 1 || ls[0].TotalAttempts != 2 {
		t.Errorf("after --force: %+v", ls)
	}
}

// A letter stored without its body (the original was too large to store
// beside the headers) is never replayed as an empty event, even forced;
// given the body it is.
func TestLetterWithoutItsBodyIsNotReplayedEmpty(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	h := nats.Header{}
	for k, v := range map[string]string{
		deadletter.HeaderReason: "max_attempts", deadletter.HeaderClass: "server_error", deadletter.HeaderRoute: "ok",
		deadletter.HeaderTriggerID: okID, deadletter.HeaderStream: stream, deadletter.HeaderSequence: "1",
		deadletter.HeaderSubject: "work.ok.big", deadletter.HeaderAttempts: "3", event.HeaderIdempotencyKey: "big-1",
		deadletter.HeaderBodyOmitted: deadletter.BodyOmittedTooLarge, deadletter.HeaderBodySize: "2000000",
		deadletter.HeaderBodySHA256: "ab12", deadletter.HeaderLetterForm: string(deadletter.FormTrimmed),
	} {
		h.Set(k, v)
	}
	ack := s.nats.Publish(t, &nats.Msg{Subject: "agentrelay.dlq.work.ok.big", Header: h})
	seq := fmt.Sprint(ack.Sequence)

	for _, args := range [][]string{{"dlq", "replay"}, {"dlq", "replay", "--force"}} {
		code, out, _ := s.cli("", args...)
		if code != 1 || !strings.Contains(out, "stored without its body (Agentrelay-Body-Omitted: too_large, 2000000 bytes") || !strings.Contains(out, "--body-file") {
			t.Errorf("%v: %d\n%s", args, code, out)
		}
	}
	if s.dlqCount() != 1 || s.emu.LedgerLen() != 0 {
		t.Fatalf("a letter without its body was replayed (%d letters left, %d calls)", s.dlqCount(), s.emu.LedgerLen())
	}
	if _, out, _ := s.cli("", "dlq", "list"); !strings.Contains(out, "(body not stored: too_large)") {
		t.Errorf("dlq list does not say the body is missing:\n%s", out)
	}
	body := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(body, []byte(`{"input":"the big one, recovered"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := s.cli("", "dlq", "replay", seq, "--body-file", body); code != 0 {
		t.Fatalf("replay with the body: %d\n%s%s", code, out, errOut)
	}
	s.settled("ok")
	if s.emu.Accepted(okID, "big-1") != 1 || s.dlqCount() != 0 {
		t.Errorf("accepted %d times, %d letters left", s.emu.Accepted(okID, "big-1"), s.dlqCount())
	}
}

// A dry run prints the key the worker will really use, also for a letter
// whose own key could not be used: the replay's message id.
func TestDryRunPrintsTheKeyReallyUsed(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.nats.Publish(t, &nats.Msg{Subject: "work.ok.x", Data: []byte(`{"input":"k"}`), Header: nats.Header{"Idempotency-Key": {"bad key"}}})
	s.settled("ok")
	ls := s.lettersJSON()
	if len(ls) != 1 || ls[0].Reason != "invalid_idempotency_key" || ls[0].IdempotencyKey != "" {
		t.Fatalf("letters: %+v", ls)
	}
	code, out, _ := s.cli("", "dlq", "replay", "--force", "--dry-run")
	want := fmt.Sprintf("with Idempotency-Key agentrelay-replay:%s:%d:", dlqName, ls[0].Seq)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "the letter's own key could not be used") {
		t.Fatalf("dry run: %d, want %q in\n%s", code, want, out)
	}
	key := strings.Fields(out[strings.Index(out, "Idempotency-Key ")+len("Idempotency-Key "):])[0]
	if code, out, _ := s.cli("", "dlq", "replay", "--force"); code != 0 {
		t.Fatalf("replay: %d %s", code, out)
	}
	s.settled("ok")
	if n := s.emu.Accepted(okID, key); n != 1 {
		t.Errorf("the key the dry run printed, %s, was accepted %d times, want 1", key, n)
	}
}

// squash collapses runs of spaces (tabwriter's padding).
func squash(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}
