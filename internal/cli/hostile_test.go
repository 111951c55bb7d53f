package cli

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
)

// Hostile input, round 2: what anyone able to publish a dead letter (or to
// give the commands odd arguments) can make the SRE toolkit do.

// forged is a dead letter as it would be written by hand: by a process that
// may publish to the dead-letter subjects, or by an edit of a real one.
type forged struct {
	dlSubject string            // its subject in the dead-letter stream
	route     string            // Agentrelay-Route
	trigger   string            // Agentrelay-Trigger-Id
	subject   string            // Agentrelay-Subject: where replay would publish
	key       string            // Idempotency-Key
	reason    string            // Agentrelay-Reason; forbidden when empty
	extra     map[string]string // more headers
	body      string            // {"input":"forged"} when empty
}

// ensureDLQ creates the dead-letter stream as the worker does.
func (s *stack) ensureDLQ() {
	s.t.Helper()
	if err := deadletter.NewWriter(s.nats.JS, appconfig.DeadLetter(s.cfg.DeadLetter)).Ensure(context.Background()); err != nil {
		s.t.Fatal(err)
	}
}

// forge stores f in the dead-letter stream and returns its sequence.
func (s *stack) forge(f forged) uint64 {
	s.t.Helper()
	h := nats.Header{}
	if f.reason == "" {
		f.reason = "forbidden"
	}
	h.Set(deadletter.HeaderReason, f.reason)
	h.Set(deadletter.HeaderClass, "forbidden")
	h.Set(deadletter.HeaderStatus, "403")
	h.Set(deadletter.HeaderRoute, f.route)
	h.Set(deadletter.HeaderTriggerID, f.trigger)
	h.Set(deadletter.HeaderStream, stream)
	h.Set(deadletter.HeaderSequence, "1")
	h.Set(deadletter.HeaderSubject, f.subject)
	h.Set(deadletter.HeaderAttempts, "1")
	if f.key != "" {
		h.Set(event.HeaderIdempotencyKey, f.key)
	}
	for k, v := range f.extra {
		h.Set(k, v)
	}
	if f.body == "" {
		f.body = `{"input":"forged"}`
	}
	ack := s.nats.Publish(s.t, &nats.Msg{Subject: f.dlSubject, Header: h, Data: []byte(f.body)})
	if ack.Stream != dlqName {
		s.t.Fatalf("forged letter stored in %s", ack.Stream)
	}
	return ack.Sequence
}

func (s *stack) streamMsgs(name string) (uint64, bool) {
	s.t.Helper()
	st, err := s.nats.JS.Stream(context.Background(), name)
	if err != nil {
		return 0, false
	}
	info, err := st.Info(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.Msgs, true
}

// A letter may only be replayed to a subject its own route consumes, on the
// dead-letter subject that subject maps to, for the trigger its route calls,
// and never to a system subject: replay runs with the operator's
// credentials, and the letter's headers are anyone's to write.
func TestReplayRefusesForgedLetters(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	for _, v := range []string{"VICTIM", "VICTIM2"} {
		s.nats.CreateStream(t, jetstream.StreamConfig{Name: v, Subjects: []string{strings.ToLower(v) + ".>"}})
		for i := range 3 {
			s.publish(strings.ToLower(v)+".x", "precious", fmt.Sprintf("%s-%d", v, i))
		}
	}
	ok := func(subject string) forged {
		return forged{dlSubject: "agentrelay.dlq." + subject, route: "ok", trigger: okID, subject: subject, key: "k-" + strings.ReplaceAll(subject, "$", "")}
	}
	api := func(subject string) forged { f := ok(subject); f.body = "{}"; return f }
	// In this order: the old replay went through the letters in turn and
	// stopped at the first publish that failed.
	refused := []struct {
		name string
		f    forged
	}{
		{"purge", api("$JS.API.STREAM.PURGE.VICTIM")},
		{"delete", api("$JS.API.STREAM.DELETE.VICTIM2")},
		{"another agent", forged{dlSubject: "agentrelay.dlq.work.ok.steal", route: "locked", trigger: lockID, subject: "work.ok.steal", key: "steal-1"}},
		{"moved letter", forged{dlSubject: "agentrelay.dlq.work.ok.elsewhere", route: "ok", trigger: okID, subject: "work.ok.here", key: "moved-1"}},
		{"wrong trigger", forged{dlSubject: "agentrelay.dlq.work.ok.trig", route: "ok", trigger: "agtch_cli_other", subject: "work.ok.trig", key: "trig-1"}},
		{"unknown route", forged{dlSubject: "agentrelay.dlq.work.ok.nosuch", route: "nosuch", trigger: okID, subject: "work.ok.nosuch", key: "nosuch-1"}},
		{"no route", forged{dlSubject: "agentrelay.dlq.work.ok.noroute", trigger: okID, subject: "work.ok.noroute", key: "noroute-1"}},
		{"inbox", ok("_INBOX.abc")},
		{"$SYS", ok("$SYS.REQ.SERVER.PING")},
		{"$KV", ok("$KV.cfg.x")},
		{"wildcard", forged{dlSubject: "agentrelay.dlq.work.ok.star", route: "ok", trigger: okID, subject: "work.ok.*"}},
		{"wildcard >", forged{dlSubject: "agentrelay.dlq.work.ok.gt", route: "ok", trigger: okID, subject: "work.ok.>"}},
		{"empty token", forged{dlSubject: "agentrelay.dlq.work.ok.empty", route: "ok", trigger: okID, subject: "work.ok..x"}},
		{"whitespace", forged{dlSubject: "agentrelay.dlq.work.ok.space", route: "ok", trigger: okID, subject: "work.ok.a b"}},
		{"control", forged{dlSubject: "agentrelay.dlq.work.ok.ctl", route: "ok", trigger: okID, subject: "work.ok.a\x1b"}},
		{"not a route's", forged{dlSubject: "agentrelay.dlq.victim.x", route: "ok", trigger: okID, subject: "victim.x", key: "victim-1"}},
	}
	seqOf := map[uint64]string{}
	for _, r := range refused {
		seqOf[s.forge(r.f)] = r.name
	}
	good := s.forge(ok("work.ok.fine"))

	code, out, errOut := s.cli("", "dlq", "replay", "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: %d\n%s%s", code, out, errOut)
	}
	assertTerminalSafe(t, "replay --dry-run", out+errOut)
	if !strings.Contains(out, fmt.Sprintf("would replay %d ", good)) {
		t.Errorf("dry run does not replay the good letter %d:\n%s", good, out)
	}
	var notRefused []string
	for seq, name := range seqOf {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^refuse %d: \S`, seq)).MatchString(out) {
			notRefused = append(notRefused, fmt.Sprintf("%s (%d)", name, seq))
		}
	}
	if len(notRefused) > 0 {
		t.Errorf("dry run does not refuse, with a reason, %v:\n%s", notRefused, out)
	}
	if !strings.Contains(out, fmt.Sprintf("1 would be replayed, %d refused", len(refused))) {
		t.Errorf("dry run summary:\n%s", out)
	}
	for _, want := range []string{"system subject", "wildcard", "empty token", "whitespace or a control character", "route ok does not consume",
		"route locked does not consume", "dead-letter subject", "trigger", `no route "nosuch"`, "no Agentrelay-Route"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run gives no reason %q", want)
		}
	}

	code, out, errOut = s.cli("", "dlq", "replay")
	if code != ExitError || !strings.Contains(out, "replayed 1 dead letter") || !strings.Contains(out, fmt.Sprintf("refused %d", len(refused))) {
		t.Errorf("replay: %d\n%s%s", code, out, errOut)
	}
	assertTerminalSafe(t, "replay", out+errOut)
	for _, v := range []string{"VICTIM", "VICTIM2"} {
		if n, exists := s.streamMsgs(v); !exists || n != 3 {
			t.Errorf("stream %s after the replay: exists %v, %d messages (want 3)", v, exists, n)
		}
	}
	s.settled("ok", "locked")
	if s.emu.Accepted(okID, "k-work.ok.fine") != 1 {
		t.Error("the good letter was not replayed")
	}
	for _, k := range []string{"steal-1", "moved-1", "trig-1", "nosuch-1", "noroute-1"} {
		if s.emu.Accepted(okID, k) != 0 || s.emu.Accepted(lockID, k) != 0 {
			t.Errorf("forged letter %s reached an agent", k)
		}
	}
	if got := s.dlqCount(); got != uint64(len(refused)) {
		t.Errorf("%d dead letters left, want the %d refused ones", got, len(refused))
	}
}

// The dead-letter stream is re-created when missing, and its sequences
// start again at 1: a new letter 1 is not the old letter 1. Its replay
// must reach the API (not be taken for a replay already done), and
// --new-key must give it a key of its own.
func TestReplayOfARecreatedDeadLetterStream(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	letter := func(key string) forged {
		return forged{dlSubject: "agentrelay.dlq.work.ok.again", route: "ok", trigger: okID, subject: "work.ok.again", key: key}
	}
	newKeyOf := func() string {
		t.Helper()
		code, out, errOut := s.cli("", "dlq", "replay", "--dry-run", "--new-key")
		m := regexp.MustCompile(`with Idempotency-Key (\S+)`).FindStringSubmatch(out)
		if code != 0 || m == nil {
			t.Fatalf("dry run: %d\n%s%s", code, out, errOut)
		}
		return m[1]
	}

	s.ensureDLQ()
	if seq := s.forge(letter("first")); seq != 1 {
		t.Fatalf("first letter is %d", seq)
	}
	firstNewKey := newKeyOf()
	if code, out, errOut := s.cli("", "dlq", "replay"); code != 0 || !strings.Contains(out, "replayed 1 dead letter") {
		t.Fatalf("first replay: %d\n%s%s", code, out, errOut)
	}
	s.settled("ok")

	if err := s.nats.JS.DeleteStream(context.Background(), dlqName); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // the new letter's timestamp differs, as it would in life
	s.ensureDLQ()
	if seq := s.forge(letter("second")); seq != 1 {
		t.Fatalf("second letter is %d, want 1 in the re-created stream", seq)
	}
	if k := newKeyOf(); k == firstNewKey {
		t.Errorf("--new-key gives the new letter 1 the old letter 1's key %s", k)
	}
	code, out, errOut := s.cli("", "dlq", "replay")
	if code != 0 || strings.Contains(out, "already been replayed") {
		t.Errorf("second replay: %d\n%s%s", code, out, errOut)
	}
	s.settled("ok")
	for _, k := range []string{"first", "second"} {
		if n := s.emu.Accepted(okID, k); n != 1 {
			t.Errorf("event %s accepted %d times, want 1", k, n)
		}
	}
}

// A replay publish the work stream deduplicates against a message that is
// not this letter's replay (someone published with its message id first)
// does not count as done: the letter stays.
func TestReplayDeduplicatedAgainstAnotherEventKeepsTheLetter(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	seq := s.forge(forged{dlSubject: "agentrelay.dlq.work.ok.d", route: "ok", trigger: okID, subject: "work.ok.d", key: "dd-1"})
	tc := s.toolConn()
	l := firstLetter(t, openStoreT(t, tc))
	if l.Seq != seq {
		t.Fatalf("letter %d, want %d", l.Seq, seq)
	}
	// The id the replay will use, planted on another event.
	s.nats.Publish(t, &nats.Msg{Subject: "work.ok.planted", Data: []byte(`{"input":"planted"}`)}, jetstream.WithMsgID(replayID(l)))
	code, out, errOut := s.cli("", "dlq", "replay")
	if code == 0 || !strings.Contains(out, "refused 1") || s.dlqCount() != 1 {
		t.Errorf("replay deduplicated against another event: %d (%d letters left)\n%s%s", code, s.dlqCount(), out, errOut)
	}
	if !strings.Contains(out, "deduplicated") {
		t.Errorf("no reason given:\n%s", out)
	}
}

// hostileText is what a header may carry to take over a terminal: clear
// screen, a window title, the bell, C1 CSI, and right-to-left override.
const hostileText = "x\x1b[2J\x1b]0;pwned\x07\u009b31m\u202eevil\u2066\u200f"

// Every command's output, whatever the dead letters' headers say, reaches
// the terminal without one control character, escape sequence or bidi
// control: as text (escaped) and as JSON (\u escapes, same data).
func TestEveryCommandSanitisesWhatItPrints(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	seq := s.forge(forged{dlSubject: "agentrelay.dlq.work.ok.h", route: "ok" + hostileText, trigger: okID + hostileText, subject: "work.ok.h" + hostileText,
		key: "k", reason: "forbidden" + hostileText, extra: map[string]string{"X-Evil": hostileText, deadletter.HeaderError: hostileText}, body: hostileText})
	s.forge(forged{dlSubject: "agentrelay.dlq.work.ok.h2", route: "ok", trigger: okID, subject: "work.ok.h2", key: "k2", reason: hostileText})
	s.publish("work.ok.h", `{"input":"x"}`, hostileText) // WORK:1, its message id hostile
	for _, args := range [][]string{
		{"status"},
		{"status", "--json"},
		{"dlq", "list"},
		{"dlq", "list", "--json"},
		{"dlq", "list", "--preview", "0"},
		{"dlq", "show", fmt.Sprint(seq)},
		{"dlq", "show", "--json", fmt.Sprint(seq)},
		{"dlq", "replay", "--dry-run"},
		{"dlq", "replay", "--dry-run", "--new-key"},
		{"dlq", "list", "--subject", "work." + hostileText},
		{"dlq", "show", hostileText},
		{"pause", "ok" + hostileText},
		{"resume", hostileText},
		{"pause", "ok", "--until", hostileText},
		{"dlq", "replay", "--dry-run", "--force"},
		{"events", "show", "k"},
		{"events", "show", "--json", "k"},
		{"events", "show", hostileText},
		{"events", "show", "WORK:1"},
	} {
		_, out, errOut := s.cli("", args...)
		assertTerminalSafe(t, strings.Join(args, " "), out+errOut)
	}
	_, out, _ := s.cli("", "status")
	if !strings.Contains(out, `\u001b[2J`) || !strings.Contains(out, `\u202e`) {
		t.Errorf("status hides the hostile text instead of showing it escaped:\n%s", out)
	}
}

// assertTerminalSafe fails when out holds anything a terminal would act on
// rather than print: every rune must be printable, a space or a newline.
func assertTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: output is not valid UTF-8: %q", what, out)
		return
	}
	for i, r := range out {
		if r != '\n' && r != ' ' && !unicode.IsPrint(r) {
			t.Errorf("%s: output carries %U at byte %d: %q", what, r, i, out)
			return
		}
	}
}

// Every numeric and duration flag is bounded, and a bad value is refused
// naming the flag and what it may be, before anything is done.
func TestNumericFlagsAreBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"status", "--watch", "1ns"}, "--watch"},
		{[]string{"status", "--watch", "-1s"}, "--watch"},
		{[]string{"status", "--watch", "48h"}, "--watch"},
		{[]string{"dlq", "list", "--limit", "-1"}, "--limit"},
		{[]string{"dlq", "list", "--status", "-3"}, "--status"},
		{[]string{"dlq", "list", "--status", "1000"}, "--status"},
		{[]string{"dlq", "list", "--preview", "-1"}, "--preview"},
		{[]string{"dlq", "list", "--preview", "100000000"}, "--preview"},
		{[]string{"dlq", "purge", "--limit", "-5"}, "--limit"},
		{[]string{"dlq", "replay", "--rate", "NaN"}, "--rate"},
		{[]string{"dlq", "replay", "--rate", "+Inf"}, "--rate"},
		{[]string{"dlq", "replay", "--rate", "0"}, "--rate"},
		{[]string{"dlq", "replay", "--rate", "-2"}, "--rate"},
		{[]string{"dlq", "replay", "--limit", "-1"}, "--limit"},
		{[]string{"publish", "work.x", "--count", "0"}, "--count"},
		{[]string{"publish", "work.x", "--timeout", "-1s"}, "--timeout"},
		{[]string{"publish", "work.x", "--timeout", "1ns"}, "--timeout"},
		{[]string{"dev", "--nats-port", "70000"}, "--nats-port"},
		{[]string{"dev", "--nats-port", "-1"}, "--nats-port"},
		{[]string{"dev", "--emulator-port", "65536"}, "--emulator-port"},
		{[]string{"dev", "--emulator-port", "-1"}, "--emulator-port"},
		{[]string{"dev", "--metrics-port", "70000"}, "--metrics-port"},
		{[]string{"dev", "--metrics-port", "-8"}, "--metrics-port"},
		{[]string{"emulator", "--error-rate", "NaN"}, "--error-rate"},
		{[]string{"emulator", "--drop-rate", "1.5"}, "--drop-rate"},
		{[]string{"emulator", "--latency", "-1s"}, "--latency"},
		{[]string{"emulator", "--latency-jitter", "100h"}, "--latency-jitter"},
	} {
		// No configuration and no server: the flag must be refused first.
		code, out, errOut := runCLI(t, "", append(tc.args, "--config", "/nonexistent/agentrelay.yaml")...)
		if code != ExitConfig || !strings.Contains(errOut, tc.flag) || !regexp.MustCompile(`must be|allowed|from .* to`).MatchString(errOut) {
			t.Errorf("%v: exit %d\n%s%s", tc.args, code, out, errOut)
		}
		if strings.Contains(errOut, "/nonexistent") {
			t.Errorf("%v: the configuration was read before the flag was checked: %s", tc.args, errOut)
		}
	}
}

// `dlq show` of a letter that is not there says so plainly.
func TestShowMissingLetter(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.ensureDLQ()
	s.forge(forged{dlSubject: "agentrelay.dlq.work.ok.m", route: "ok", trigger: okID, subject: "work.ok.m"})
	for _, seq := range []string{"2", "999"} {
		code, _, errOut := s.cli("", "dlq", "show", seq)
		if code != ExitError || !strings.Contains(errOut, fmt.Sprintf("no dead letter %s in stream %s", seq, dlqName)) || strings.Contains(errOut, "API error") {
			t.Errorf("show %s: %d %s", seq, code, errOut)
		}
	}
}

// A filter naming a route or reason no configuration and no dead letter
// knows is a typo: refused, with a suggestion.
func TestUnknownFilterValuesSuggest(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.ensureDLQ()
	s.forge(forged{dlSubject: "agentrelay.dlq.work.ok.f", route: "ok", trigger: okID, subject: "work.ok.f"})
	s.forge(forged{dlSubject: "agentrelay.dlq.work.gone.f", route: "gone", trigger: okID, subject: "work.gone.f", reason: "future_reason"})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "list", "--reason", "forbiden"}, `did you mean "forbidden"`},
		{[]string{"dlq", "replay", "--reason", "max-attempts", "--dry-run"}, `did you mean "max_attempts"`},
		{[]string{"dlq", "purge", "--route", "lockd", "--yes"}, `did you mean "locked"`},
		{[]string{"dlq", "list", "--route", "nosuch"}, `no route "nosuch"`},
	} {
		code, out, errOut := s.cli("", tc.args...)
		if code != ExitConfig || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: %d\n%s%s", tc.args, code, out, errOut)
		}
	}
	if s.dlqCount() != 2 {
		t.Error("a refused filter deleted something")
	}
	// A route gone from the configuration, or a reason this version does
	// not know, is still a filter when dead letters carry it.
	for _, args := range [][]string{{"dlq", "list", "--route", "gone"}, {"dlq", "list", "--reason", "future_reason"}} {
		if code, out, errOut := s.cli("", args...); code != 0 || !strings.Contains(errOut, "1 dead letter\n") {
			t.Errorf("%v: %d\n%s%s", args, code, out, errOut)
		}
	}
}
