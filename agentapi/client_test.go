package agentapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/testenv/wait"
)

const (
	token     = "tok-3f9c1a"
	triggerID = "agtch_complaints_123"
)

// emulated starts the emulator on loopback with one token allowed to call
// triggerID, and returns an Agent bound to it.
func emulated(t *testing.T, opts ...emulator.Option) (*emulator.Emulator, *agentapi.Agent) {
	t.Helper()
	emu := emulator.New(append([]emulator.Option{
		emulator.WithToken(token, triggerID),
		emulator.WithTrigger(triggerID, true),
	}, opts...)...)
	srv, err := emu.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return emu, agent(t, srv.URL, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{UserAgent: "agentrelay/test"})
}

func agent(t *testing.T, base string, tokens agentapi.TokenSource, o agentapi.ClientOptions) *agentapi.Agent {
	t.Helper()
	c, err := agentapi.NewClient(base, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	id, err := agentapi.ParseTriggerID(triggerID)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Agent(id, tokens)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTriggerSendsTheRequestTheSpecDescribes(t *testing.T) {
	emu, a := emulated(t)
	status, err := a.Trigger(context.Background(), agentapi.Event{
		Input: "Summarize the customer escalation.", ConversationKey: "email_thread_abc", IdempotencyKey: "evt-1",
	})
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("Trigger = %d, %v", status, err)
	}
	reqs := emu.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Method != "POST" || r.Path != "/v1/workspace_agents/"+triggerID+"/trigger" {
		t.Errorf("request line %s %s", r.Method, r.Path)
	}
	for k, want := range map[string]string{
		"Authorization":   "Bearer " + emulator.Redacted,
		"Content-Type":    "application/json",
		"Idempotency-Key": "evt-1",
		"User-Agent":      "agentrelay/test",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	l := emu.Ledger()
	if len(l) != 1 || l[0].Input != "Summarize the customer escalation." || l[0].ConversationKey != "email_thread_abc" || l[0].IdempotencyKey != "evt-1" {
		t.Errorf("ledger %+v", l)
	}
}

func TestBodyOmitsEmptyConversationKeyAndEscapesLikeEncodingJSON(t *testing.T) {
	body := func(ev agentapi.Event) string {
		t.Helper()
		b, err := ev.Body()
		if err != nil {
			t.Fatalf("Body(%+v): %v", ev, err)
		}
		return string(b)
	}
	got := body(agentapi.Event{Input: "a\"b\\c\n\t<x>&\u2028é\x01"})
	want := `{"input":"a\"b\\c\n\t\u003cx\u003e\u0026\u2028é\u0001"}`
	if got != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
	got = body(agentapi.Event{Input: "x", ConversationKey: "k"})
	if got != `{"input":"x","conversation_key":"k"}` {
		t.Errorf("body with key: %s", got)
	}
}

// The response classes, from the emulator's real answers.
func TestTriggerClassifiesEveryAnswer(t *testing.T) {
	emu, _ := emulated(t, emulator.WithTrigger("agtch_paused", false), emulator.WithTrigger("agtch_other", true))
	emu.AddToken("tok-other-only", "agtch_other")
	srvURL := emuURL(t, emu)
	ctx := context.Background()
	ev := agentapi.Event{Input: "hi", IdempotencyKey: "k-1"}

	check := func(name string, a *agentapi.Agent, wantStatus int, wantClass agentapi.Class) *agentapi.Error {
		t.Helper()
		status, err := a.Trigger(ctx, ev)
		var ae *agentapi.Error
		if !errors.As(err, &ae) {
			t.Fatalf("%s: want *agentapi.Error, got %d %v", name, status, err)
		}
		if status != wantStatus || ae.StatusCode != wantStatus || ae.Class != wantClass {
			t.Errorf("%s: status %d/%d class %s, want %d %s", name, status, ae.StatusCode, ae.Class, wantStatus, wantClass)
		}
		return ae
	}
	withID := func(id, tok string) *agentapi.Agent {
		c, err := agentapi.NewClient(srvURL, agentapi.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tid, err := agentapi.ParseTriggerID(id)
		if err != nil {
			t.Fatal(err)
		}
		ag, err := c.Agent(tid, agentapi.StaticToken(agentapi.NewSecret(tok)))
		if err != nil {
			t.Fatal(err)
		}
		return ag
	}

	check("unknown token", withID(triggerID, "nope"), 401, agentapi.ClassUnauthorized)
	check("no permission", withID(triggerID, "tok-other-only"), 403, agentapi.ClassForbidden)
	check("unknown id", withID("agtch_missing", token), 404, agentapi.ClassNotFound)
	emu.AddToken(token, "agtch_paused")
	check("not runnable", withID("agtch_paused", token), 409, agentapi.ClassConflict)

	emu.Script(emulator.Fault{Kind: emulator.FaultRateLimit, RetryAfter: "7"})
	if ae := check("rate limited", withID(triggerID, token), 429, agentapi.ClassRateLimited); ae.RetryAfter != 7*time.Second {
		t.Errorf("Retry-After parsed as %v", ae.RetryAfter)
	}
	emu.Script(emulator.Fault{Kind: emulator.FaultServerError, Status: 502})
	check("bad gateway", withID(triggerID, token), 502, agentapi.ClassServerError)
	emu.Script(emulator.Fault{Kind: emulator.FaultServerError, Status: 503, RetryAfter: time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)})
	if ae := check("unavailable with an HTTP-date", withID(triggerID, token), 503, agentapi.ClassServerError); ae.RetryAfter < 80*time.Second || ae.RetryAfter > 91*time.Second {
		t.Errorf("HTTP-date Retry-After parsed as %v", ae.RetryAfter)
	}
	if emu.LedgerLen() != 0 {
		t.Errorf("ledger has %d events after only refusals", emu.LedgerLen())
	}
}

func emuURL(t *testing.T, emu *emulator.Emulator) string {
	t.Helper()
	srv, err := emu.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.URL
}

func TestTimeoutNetworkAndCancelAreTheirOwnClasses(t *testing.T) {
	emu, _ := emulated(t)
	url := emuURL(t, emu)
	a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: 200 * time.Millisecond})

	emu.Script(emulator.Fault{Kind: emulator.FaultHang})
	_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
	if c := agentapi.ClassOfError(err); c != agentapi.ClassTimeout {
		t.Errorf("hang: class %s (%v), want timeout", c, err)
	}

	emu.Script(emulator.Fault{Kind: emulator.FaultDropAfterAccept})
	_, err = a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "drop-1"})
	if c := agentapi.ClassOfError(err); c != agentapi.ClassNetwork {
		t.Errorf("dropped connection: class %s (%v), want network", c, err)
	}
	// The retry with the same key gets the original outcome; nothing is
	// enqueued twice.
	if status, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "drop-1"}); err != nil || status != 202 {
		t.Errorf("retry after drop: %d %v", status, err)
	}
	if n := emu.Accepted(triggerID, "drop-1"); n != 1 {
		t.Errorf("accepted %d times", n)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	_, err = agent(t, closed, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{}).Trigger(context.Background(), agentapi.Event{Input: "x"})
	if c := agentapi.ClassOfError(err); c != agentapi.ClassNetwork {
		t.Errorf("connection refused: class %s (%v), want network", c, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	emu.Script(emulator.Fault{Kind: emulator.FaultHang})
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err = a.Trigger(ctx, agentapi.Event{Input: "x"})
	if c := agentapi.ClassOfError(err); c != agentapi.ClassCanceled {
		t.Errorf("caller canceled: class %s (%v), want canceled", c, err)
	}
}

// A connection closed after the request was sent, on a connection used
// before, is an attempt that failed with no answer: the worker's own retry
// policy decides what comes next (backoff, breaker, attempt count, logs).
// net/http would otherwise send the POST again at once on its own, because
// it carries an Idempotency-Key: a call nobody counts, and, behind a proxy
// that reset the connection while the API still works on the first, a
// second call of one event (one conversation) at the same time.
func TestADroppedCallIsNotSentAgainBehindTheWorkersBack(t *testing.T) {
	emu, a := emulated(t)
	if status, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "warm-1"}); err != nil || status != 202 {
		t.Fatalf("first call: %d %v", status, err) // leaves an idle connection to reuse
	}
	emu.Script(emulator.Fault{Kind: emulator.FaultDropAfterAccept})
	_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "drop-2"})
	if c := agentapi.ClassOfError(err); c != agentapi.ClassNetwork {
		t.Errorf("dropped on a reused connection: class %s (%v), want network", c, err)
	}
	n := 0
	for _, r := range emu.Requests() {
		if r.Header.Get("Idempotency-Key") == "drop-2" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the API received the dropped call %d times, want 1", n)
	}
}

func TestInvalidEventsAreRefusedWithoutARequest(t *testing.T) {
	emu, a := emulated(t)
	for _, ev := range []agentapi.Event{
		{Input: ""},
		{Input: "caf\xe9"},
		{Input: "x", IdempotencyKey: "a\r\nX-Injected: 1"},
		{Input: "x", IdempotencyKey: "../x"},
		{Input: "x", ConversationKey: "a\x00b"},
	} {
		_, err := a.Trigger(context.Background(), ev)
		if agentapi.ClassOfError(err) != agentapi.ClassBadRequest {
			t.Errorf("%+v: %v", ev, err)
		}
	}
	if s := emu.Stats(); s.Requests != 0 {
		t.Errorf("%d requests reached the API", s.Requests)
	}
}

func TestTriggerIDValidation(t *testing.T) {
	good := []string{"agtch_complaints_123", "agtch_A-b_9", "agtch_" + strings.Repeat("x", agentapi.MaxTriggerIDLen-6)}
	bad := []string{"", "agtch_", "complaints", "agtch_a/b", "agtch_../admin", "agtch_a%2Fb", "agtch_a b", "agtch_a\r\nb",
		"agtch_a\x00", "agtch_аbc" /* Cyrillic a */, "agtch_a.b", "agtch_a?x=1", "agtch_a#f", "AGTCH_abc",
		"agtch_" + strings.Repeat("x", agentapi.MaxTriggerIDLen)}
	for _, s := range good {
		if _, err := agentapi.ParseTriggerID(s); err != nil {
			t.Errorf("%q rejected: %v", s, err)
		}
	}
	for _, s := range bad {
		_, err := agentapi.ParseTriggerID(s)
		if !errors.Is(err, agentapi.ErrInvalidTriggerID) {
			t.Errorf("%q accepted", s)
		} else if len(err.Error()) > 200 {
			t.Errorf("error for a long id is unbounded: %d bytes", len(err.Error()))
		}
	}
}

func TestBaseURLMustBeHTTPSUnlessLoopbackOrAllowed(t *testing.T) {
	for _, ok := range []string{"https://api.chatgpt.com", "https://gw.example.com/prefix/", "http://127.0.0.1:8089", "http://localhost:1", "http://[::1]:80"} {
		if _, err := agentapi.NewClient(ok, agentapi.ClientOptions{}); err != nil {
			t.Errorf("%s rejected: %v", ok, err)
		}
	}
	if _, err := agentapi.NewClient("http://api.example.com", agentapi.ClientOptions{}); !errors.Is(err, agentapi.ErrInsecureURL) {
		t.Errorf("plain http to a remote host accepted: %v", err)
	}
	if _, err := agentapi.NewClient("http://api.example.com", agentapi.ClientOptions{AllowInsecureHTTP: true}); err != nil {
		t.Errorf("explicitly allowed plain http rejected: %v", err)
	}
	for _, bad := range []string{"ftp://x", "https://", "https://user:pw@host", "https://h?x=1", "://"} {
		_, err := agentapi.NewClient(bad, agentapi.ClientOptions{})
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("error repeats the password: %v", err)
		}
	}
}

func TestTokenNeverAppearsInErrorsOrFormatting(t *testing.T) {
	const secret = "sk-live-DO-NOT-LEAK"
	s := agentapi.NewSecret(secret)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %q %x %#v %+v", s, s, s, s, s, s), fmt.Sprint(struct{ T agentapi.Secret }{s})} {
		if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
			t.Errorf("secret printed: %s", out)
		}
	}
	// Every failure kind: none quotes the token.
	emu, _ := emulated(t)
	url := emuURL(t, emu)
	a := agent(t, url, agentapi.StaticToken(s), agentapi.ClientOptions{Timeout: 100 * time.Millisecond})
	emu.Script(emulator.Fault{Kind: emulator.FaultHang})
	_, e1 := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
	_, e2 := a.Trigger(context.Background(), agentapi.Event{Input: "x"}) // 401: unknown token
	for _, err := range []error{e1, e2} {
		if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", err), secret) {
			t.Errorf("error leaks or is nil: %v", err)
		}
	}
}

func TestFileTokenPicksUpARotatedSecret(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	write := func(v string) {
		// Kubernetes swaps a symlink; a rename is the same atomic switch.
		tmp := filepath.Join(dir, "token.tmp")
		if err := os.WriteFile(tmp, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("old-token\n")
	ft, err := agentapi.NewFileToken(path, time.Hour) // only Invalidate can refresh it in this test
	if err != nil {
		t.Fatal(err)
	}
	emu, _ := emulated(t)
	emu.AddToken("old-token", triggerID)
	url := emuURL(t, emu)
	a := agent(t, url, ft, agentapi.ClientOptions{})
	if _, err := a.Trigger(context.Background(), agentapi.Event{Input: "1"}); err != nil {
		t.Fatalf("old token: %v", err)
	}
	emu.RevokeToken("old-token")
	emu.AddToken("new-token", triggerID)
	write("new-token\n")
	if _, err := a.Trigger(context.Background(), agentapi.Event{Input: "2"}); agentapi.ClassOfError(err) != agentapi.ClassUnauthorized {
		t.Fatalf("revoked token: want 401, got %v", err)
	}
	// The 401 invalidated the cached token: the next call reads the new one.
	if _, err := a.Trigger(context.Background(), agentapi.Event{Input: "3"}); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
}

// OnChange reports a rotation picked up, once per new token: not the
// re-reads that find the same token, not a read that fails, and not the
// good token that follows a failed read when it is the one held before.
func TestFileTokenReportsEachRotationOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	write := func(v string) {
		if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a\n")
	ft, err := agentapi.NewFileToken(path, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	ft.OnChange(func() { changes++ })
	reread := func() agentapi.Secret {
		ft.Invalidate()
		s, _ := ft.Token()
		return s
	}
	for i, step := range []struct {
		write   string // "" keeps the file as it is
		changes int
	}{
		{"", 0}, {"a", 0}, {"b\n", 1}, {"", 1}, {" \n", 1}, {"b", 1}, {"c", 2},
	} {
		if step.write != "" {
			write(step.write)
		}
		s := reread()
		if changes != step.changes {
			t.Errorf("step %d (file %q, token %q): %d changes, want %d", i, step.write, s.Reveal(), changes, step.changes)
		}
	}
}

func TestFileTokenRefreshesOnItsInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	ft, err := agentapi.NewFileToken(path, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("b"), 0o600); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the rotated token picked up", func() bool {
		s, _ := ft.Token()
		return s.Reveal() == "b"
	})
}

func TestTokenSourceErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := agentapi.NewFileToken(filepath.Join(dir, "missing"), 0); !errors.Is(err, agentapi.ErrNoToken) {
		t.Errorf("missing file: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte(" \n"), 0o600)
	if _, err := agentapi.NewFileToken(empty, 0); !errors.Is(err, agentapi.ErrNoToken) {
		t.Errorf("empty file: %v", err)
	}
	two := filepath.Join(dir, "two")
	_ = os.WriteFile(two, []byte("secret-a\nsecret-b"), 0o600)
	_, err := agentapi.NewFileToken(two, 0)
	if !errors.Is(err, agentapi.ErrNoToken) || strings.Contains(err.Error(), "secret-a") {
		t.Errorf("two lines: %v", err)
	}
	t.Setenv("AGENTRELAY_TEST_TOKEN", "")
	if _, err := agentapi.EnvToken("AGENTRELAY_TEST_TOKEN"); !errors.Is(err, agentapi.ErrNoToken) {
		t.Errorf("empty env: %v", err)
	}
	t.Setenv("AGENTRELAY_TEST_TOKEN", " env-secret \n")
	tok, err := agentapi.EnvToken("AGENTRELAY_TEST_TOKEN")
	if s, _ := tok.Token(); err != nil || s.Reveal() != "env-secret" {
		t.Errorf("env token: %v", err)
	}
}

// hostile serves fixed raw answers, for what the emulator never does.
func hostile(t *testing.T, h http.HandlerFunc) *agentapi.Agent {
	t.Helper()
	srv := &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return agent(t, "http://"+ln.Addr().String(), agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: time.Second})
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	followed := make(chan string, 1)
	a := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stolen" {
			followed <- r.Header.Get("Authorization")
			return
		}
		http.Redirect(w, r, "/stolen", http.StatusTemporaryRedirect)
	})
	status, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
	if status != 307 || agentapi.ClassOfError(err) != agentapi.ClassUnexpected {
		t.Errorf("redirect: %d %v", status, err)
	}
	select {
	case <-followed:
		t.Error("redirect was followed")
	default:
	}
}

func TestHugeErrorBodyIsCutShort(t *testing.T) {
	a := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		chunk := []byte(strings.Repeat("A", 64<<10) + "\x1b[31m")
		for i := 0; i < 1600; i++ { // 100 MiB if anyone read it all
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	start := time.Now()
	_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
	var ae *agentapi.Error
	if !errors.As(err, &ae) || ae.StatusCode != 500 {
		t.Fatalf("got %v", err)
	}
	if len(ae.Body) > agentapi.MaxErrorBody*4 {
		t.Errorf("kept %d bytes of body", len(ae.Body))
	}
	if time.Since(start) > 900*time.Millisecond {
		t.Errorf("took %v: the body was read far past the limit", time.Since(start))
	}
}

func TestErrorBodyIsSanitised(t *testing.T) {
	a := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, "bad\x1b[2Jinput\r\nX: \xff")
	})
	_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
	// Byte by byte: in ContainsAny's set "\xff" would be U+FFFD, not the byte.
	if msg := err.Error(); strings.ContainsAny(msg, "\x1b\r\n") || strings.IndexByte(msg, 0xff) >= 0 {
		t.Errorf("raw control bytes in %q", err.Error())
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	rows := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"99999999999999999999999", 365 * 24 * time.Hour, true},
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"Mon, 99 Foo 2026", 0, false},
	}
	for _, r := range rows {
		got, ok := agentapi.ParseRetryAfter(r.in, now)
		if got != r.want || ok != r.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", r.in, got, ok, r.want, r.ok)
		}
	}
}
