package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/inspect"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// A key with a bidi control (U+202E, allowed in a conversation key): status
// must not let it reorder what the terminal shows.
const bidiKey = "ab\u202ecd"

// orderedStack is the stack with an ordered route "thread" (work.thread.>)
// whose API answers 503 for the conversations stuck and bidiKey, and
// passes the others to the emulator. A failed event waits a minute before
// its retry, so what the owner holds stays put while status looks.
func orderedStack(t *testing.T) *stack {
	t.Helper()
	s := newStack(t)
	b, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Key string `json:"conversation_key"`
		}
		_ = json.Unmarshal(body, &ev)
		if ev.Key == "stuck" || ev.Key == bidiKey {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.emu.ServeHTTP(w, r)
	}))
	t.Cleanup(api.Close)
	yaml := regexp.MustCompile(`base_url: "[^"]*"`).ReplaceAllString(string(b), fmt.Sprintf("base_url: %q", api.URL))
	var ok string
	for _, line := range strings.Split(yaml, "\n") {
		if strings.Contains(line, "{name: ok,") {
			ok = line
		}
	}
	thread := strings.TrimSuffix(strings.NewReplacer("{name: ok,", "{name: thread,", "work.ok.>", "work.thread.>").Replace(ok), "}") +
		", ordering: conversation_key, retry: {max_attempts: 100, initial_backoff: 1m, max_backoff: 1m}, breaker: {disabled: true}}"
	if err := os.WriteFile(s.cfgPath, []byte(yaml+thread+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.cfg, err = config.Load(s.cfgPath); err != nil {
		t.Fatal(err)
	}
	return s
}

// status lists an ordered route's blocked keys, as the replica that owns it
// holds them: the conversations whose next events wait behind one being
// retried, the longest waiting first, with how many wait, the oldest
// waiting event's stream sequence and the event they wait behind. Keys are
// sanitised like everything status prints.
func TestStatusShowsAnOrderedRoutesBlockedKeys(t *testing.T) {
	t.Parallel()
	s := orderedStack(t)
	s.startWorker()
	for i, ev := range []struct{ key, input string }{
		{"stuck", "s0"}, {bidiKey, "b0"}, {"stuck", "s1"}, {"free", "f0"}, {"stuck", "s2"}, {bidiKey, "b1"},
	} {
		s.publish("work.thread.x", fmt.Sprintf(`{"input":%q,"conversation_key":%q}`, ev.input, ev.key), fmt.Sprintf("thread-%d", i))
	}
	var rep statusReport
	thread := func() inspect.RouteStatus {
		for _, r := range rep.Routes {
			if r.Route == "thread" {
				return r
			}
		}
		t.Fatalf("no route thread in status: %+v", rep)
		return inspect.RouteStatus{}
	}
	testenv.Eventually(t, 20*time.Second, "status shows both keys blocked behind a failed event", func() bool {
		code, out, errOut := s.cli("", "status", "--json")
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("status --json: exit %d: %v\n%s%s", code, err, out, errOut)
		}
		h := thread().OwnerHolds
		return s.emu.LedgerLen() == 1 && h != nil && h.BlockedKeys == 2 &&
			h.Blocked[0].BehindFailures == 1 && h.Blocked[1].BehindFailures == 1
	})
	h := thread().OwnerHolds
	if h.PinID != thread().Owner || h.Fenced || h.Holding != 5 || h.Running != 2 {
		t.Errorf("owner holds %+v, want the owner's pin %s, unfenced, 5 held, 2 being handled", h, thread().Owner)
	}
	stuck, bidi := h.Blocked[0], h.Blocked[1]
	if stuck.Key != "stuck" || stuck.Waiting != 2 || stuck.OldestSeq != 3 || stuck.BehindSeq != 1 {
		t.Errorf("first blocked key %+v, want stuck: 2 waiting, the oldest seq 3, behind seq 1", stuck)
	}
	if bidi.Key != bidiKey || bidi.Waiting != 1 || bidi.OldestSeq != 6 || bidi.BehindSeq != 2 {
		t.Errorf("second blocked key %+v, want %q: 1 waiting, seq 6, behind seq 2", bidi, bidiKey)
	}

	code, out, errOut := s.cli("", "status")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	if strings.ContainsRune(out, '\u202e') {
		t.Error("status printed a bidi control unescaped")
	}
	golden(t, "status_ordered_blocked", trimTrailing(strings.ReplaceAll(out, thread().Owner, "<PIN>")))

	_, out, _ = s.cli("", "status", "--blocked-keys", "1")
	if !strings.Contains(out, "... and 1 more blocked key (") || strings.Contains(out, `ab\u202ecd`) {
		t.Errorf("status --blocked-keys 1 does not stop at one key:\n%s", out)
	}
}

// An owner that does not answer (here: the worker is gone, its pin not yet
// expired: the server keeps it for the pinned TTL) leaves the blocked keys
// unknown, said as such, and status still answers within a few seconds.
func TestStatusSaysWhenAnOrderedRoutesOwnerDoesNotAnswer(t *testing.T) {
	t.Parallel()
	s := orderedStack(t)
	s.startWorker()
	s.publish("work.thread.x", `{"input":"s0","conversation_key":"stuck"}`, "gone-0")
	testenv.Eventually(t, 10*time.Second, "the route pinned", func() bool {
		_, out, _ := s.cli("", "status")
		return strings.Contains(out, "holding 1 event,")
	})
	s.stop()
	start := time.Now()
	code, out, errOut := s.cli("", "status")
	if code != 0 || time.Since(start) > 10*time.Second {
		t.Fatalf("status: exit %d after %v\n%s%s", code, time.Since(start), out, errOut)
	}
	if !strings.Contains(out, "one replica owns it") || !strings.Contains(out, "blocked keys unknown: the owner did not answer: no replica answered on agentrelay.status.WORK.agentrelay-thread") {
		t.Errorf("status with the owner gone:\n%s", out)
	}
}
