package agentapi_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agentrelay/agentrelay/agentapi"
)

// The API's answers are untrusted: whatever a server (or something in the
// way) sends, a call ends within its timeout, reads a bounded amount, never
// goes to another host, and never stores more of the answer than it needs.

// rawServer accepts connections and hands each to serve, for answers no
// well-behaved HTTP server would write.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Read the request headers (the body is small) so the
				// client is waiting for the answer.
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				serve(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func timedTrigger(t *testing.T, a *agentapi.Agent) (int, time.Duration, error) {
	t.Helper()
	start := time.Now()
	status, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "hostile-1"})
	return status, time.Since(start), err
}

// A redirect to another host is an answer, not an instruction: the other
// host never hears from us, and certainly never sees the token.
func TestRedirectToAnotherHostIsNeverFollowed(t *testing.T) {
	var contacted atomic.Int32
	evil := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		contacted.Add(1)
		w.WriteHeader(http.StatusAccepted)
	})}
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = evil.Serve(eln) }()
	t.Cleanup(func() { _ = evil.Close() })
	for _, code := range []int{301, 302, 303, 307, 308} {
		a := hostile(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://"+eln.Addr().String()+"/v1/workspace_agents/agtch_evil/trigger", code)
		})
		status, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
		if status != code || agentapi.ClassOfError(err) != agentapi.ClassUnexpected {
			t.Errorf("%d redirect: got %d %v, want the redirect itself as an unexpected answer", code, status, err)
		}
	}
	if n := contacted.Load(); n != 0 {
		t.Errorf("the other host was called %d times", n)
	}
}

// Headers trickled a byte at a time (slow loris) cannot hold a call past
// its timeout.
func TestSlowLorisHeadersEndAtTheTimeout(t *testing.T) {
	url := rawServer(t, func(c net.Conn) {
		for _, b := range []byte("HTTP/1.1 202 Accepted\r\nX-Slow: " + strings.Repeat("a", 10_000)) {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: 500 * time.Millisecond})
	status, took, err := timedTrigger(t, a)
	if status != 0 || agentapi.ClassOfError(err) != agentapi.ClassTimeout {
		t.Errorf("got %d %v, want a timeout", status, err)
	}
	if took > 2*time.Second {
		t.Errorf("the call took %v with a 500ms timeout", took)
	}
}

// An error body dripped slowly and never finished: the status decides, and
// the call still ends at its timeout.
func TestEndlessSlowErrorBodyEndsAtTheTimeout(t *testing.T) {
	url := rawServer(t, func(c net.Conn) {
		if _, err := io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			return
		}
		for {
			if _, err := io.WriteString(c, "1\r\nx\r\n"); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: 500 * time.Millisecond})
	status, took, err := timedTrigger(t, a)
	var ae *agentapi.Error
	if status != 503 || !errors.As(err, &ae) || ae.Class != agentapi.ClassServerError {
		t.Errorf("got %d %v, want the 503 as a server error", status, err)
	}
	if took > 2*time.Second {
		t.Errorf("the call took %v with a 500ms timeout", took)
	}
}

// An accepted call whose body never ends is still accepted, promptly: the
// client reads a small drain budget and drops the connection.
func TestEndlessBodyAfterAcceptIsAbandonedQuickly(t *testing.T) {
	url := rawServer(t, func(c net.Conn) {
		if _, err := io.WriteString(c, "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			return
		}
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 32<<10, strings.Repeat("z", 32<<10))
		for {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	})
	a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: 5 * time.Second})
	before := totalAlloc()
	status, took, err := timedTrigger(t, a)
	if status != 202 || err != nil {
		t.Errorf("got %d %v, want the acceptance", status, err)
	}
	if took > time.Second {
		t.Errorf("took %v: the endless body was read", took)
	}
	if grew := totalAlloc() - before; grew > 8<<20 {
		t.Errorf("allocated %d bytes for one call with an endless body", grew)
	}
}

// A huge error body costs a bounded amount of memory: the client keeps
// MaxErrorBody of it and discards a small drain budget.
func TestHugeErrorBodyIsNotBuffered(t *testing.T) {
	chunk := []byte(strings.Repeat("A", 64<<10))
	a := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		for range 400 { // 25 MiB if anyone read it all
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	before := totalAlloc()
	_, _, err := timedTrigger(t, a)
	var ae *agentapi.Error
	if !errors.As(err, &ae) || ae.StatusCode != 500 || len(ae.Body) > agentapi.MaxErrorBody {
		t.Fatalf("got %v (body %d bytes)", err, len(ae.Body))
	}
	if grew := totalAlloc() - before; grew > 8<<20 {
		t.Errorf("allocated %d bytes for a 25 MiB error body", grew)
	}
}

// Headers too large to be an answer are refused at once, not read on.
func TestHugeResponseHeadersAreRefused(t *testing.T) {
	url := rawServer(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "HTTP/1.1 202 Accepted\r\nX-Big: "+strings.Repeat("b", 1<<20)+"\r\n\r\n")
	})
	a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: 5 * time.Second})
	status, took, err := timedTrigger(t, a)
	if status != 0 || agentapi.ClassOfError(err) != agentapi.ClassNetwork {
		t.Errorf("got %d %v, want a refused answer (network class, retried)", status, err)
	}
	if took > 2*time.Second {
		t.Errorf("took %v", took)
	}
}

// Retry-After is the server's word, bounded: a negative, garbage or
// ten-years-away value never yields a negative or unbounded delay, and
// garbage is ignored rather than read as zero.
func TestBogusRetryAfterIsBoundedOrIgnored(t *testing.T) {
	rows := []struct {
		header string
		want   time.Duration
	}{
		{"-5", 0},
		{"soon", 0},
		{"1e3", 0},
		{"0x10", 0},
		{"99999999999999999999", 365 * 24 * time.Hour},
		{time.Now().AddDate(10, 0, 0).UTC().Format(http.TimeFormat), 365 * 24 * time.Hour},
		{time.Now().AddDate(-10, 0, 0).UTC().Format(http.TimeFormat), 0},
		{"5, 7", 0},
	}
	for _, r := range rows {
		a := hostile(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header()["Retry-After"] = []string{r.header}
			w.WriteHeader(http.StatusTooManyRequests)
		})
		_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
		var ae *agentapi.Error
		if !errors.As(err, &ae) || ae.Class != agentapi.ClassRateLimited {
			t.Fatalf("Retry-After %q: got %v", r.header, err)
		}
		if ae.RetryAfter != r.want {
			t.Errorf("Retry-After %q: parsed as %v, want %v", r.header, ae.RetryAfter, r.want)
		}
	}
	// Control characters make the answer malformed: a network failure,
	// retried, whose error text quotes them escaped.
	a := hostile(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Retry-After"] = []string{"\x1b[2J"}
		w.WriteHeader(http.StatusTooManyRequests)
	})
	_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
	if agentapi.ClassOfError(err) != agentapi.ClassNetwork || strings.ContainsAny(err.Error(), "\x1b\r\n") {
		t.Errorf("escape sequence in Retry-After: got %q", err)
	}
}

// A status line other than 202 — odd ones included — is a failure to
// retry, not an acceptance.
func TestOddStatusCodesAreNotAcceptance(t *testing.T) {
	for _, code := range []int{100, 199, 299, 304, 600, 999} {
		url := rawServer(t, func(c net.Conn) {
			_, _ = fmt.Fprintf(c, "HTTP/1.1 %d Odd\r\nContent-Length: 0\r\n\r\n", code)
		})
		a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: time.Second})
		status, _, err := timedTrigger(t, a)
		if err == nil {
			t.Errorf("status %d: got %d %v", code, status, err)
		}
	}
}

func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// Only 202 means accepted: a 200 from something that answers every POST
// (a catch-all behind a wrong base URL) must not be taken for acceptance.
func TestOnlyAcceptedMeansAccepted(t *testing.T) {
	for _, code := range []int{200, 201, 204} {
		a := hostile(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
		status, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
		if status != code || agentapi.ClassOfError(err) != agentapi.ClassUnexpected {
			t.Errorf("%d: status %d, class %s", code, status, agentapi.ClassOfError(err))
		}
	}
}

// A gateway that echoes the request's headers in an error body must not get
// the token into the error (which goes to logs and dead letters).
func TestEchoedTokenIsScrubbedFromTheError(t *testing.T) {
	a := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(502)
		_, _ = io.WriteString(w, "upstream failed; request had Authorization: "+r.Header.Get("Authorization"))
	})
	_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "Bearer [REDACTED]") {
		t.Errorf("error %v", err)
	}
}

// Every answer is bounded by the call timeout, whatever its status line:
// a 101 Switching Protocols hands the connection over to "another protocol"
// (net/http stops watching the call's context for it), and informational
// 1xx lines can come without end. None of them holds a call, and with it the
// worker's claim on the message, past its timeout.
func TestEveryAnswerEndsAtTheTimeout(t *testing.T) {
	hang := func(c net.Conn) { _, _ = io.Copy(io.Discard, c) } // until the client hangs up
	rows := []struct {
		name  string
		serve func(net.Conn)
	}{
		{"101 then silence", func(c net.Conn) {
			if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"); err == nil {
				hang(c)
			}
		}},
		{"101 then an endless trickle", func(c net.Conn) {
			if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"); err != nil {
				return
			}
			for {
				if _, err := c.Write([]byte{'x'}); err != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}},
		{"101 without Upgrade then silence", func(c net.Conn) {
			if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\n\r\n"); err == nil {
				hang(c)
			}
		}},
		{"endless 100 Continue", endless1xx("100 Continue")},
		{"endless 102 Processing", endless1xx("102 Processing")},
		{"endless 103 Early Hints", endless1xx("103 Early Hints\r\nLink: </a.css>; rel=preload")},
		{"headers then a stalled error body", func(c net.Conn) {
			if _, err := io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\npartial"); err == nil {
				hang(c)
			}
		}},
		{"headers then a stalled 202 body", func(c net.Conn) {
			if _, err := io.WriteString(c, "HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n"); err == nil {
				hang(c)
			}
		}},
		{"nothing at all", hang},
	}
	const timeout = 300 * time.Millisecond
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			url := rawServer(t, r.serve)
			a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: timeout})
			done := make(chan struct{})
			var status int
			var err error
			var took time.Duration
			go func() { // not timedTrigger: this may outlive the test
				defer close(done)
				start := time.Now()
				status, err = a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "hostile-1"})
				took = time.Since(start)
			}()
			select {
			case <-done:
			case <-time.After(10 * timeout):
				t.Fatalf("the call is still running after %v with a %v timeout", 10*timeout, timeout)
			}
			if took > 5*timeout {
				t.Errorf("the call took %v with a %v timeout", took, timeout)
			}
			if status == 202 {
				return // headers then a stalled body: accepted by its status
			}
			if err == nil {
				t.Errorf("got %d and no error: taken for acceptance", status)
			}
		})
	}
}

// endless1xx writes one informational status line after another, slowly,
// and never a final answer.
func endless1xx(line string) func(net.Conn) {
	return func(c net.Conn) {
		for {
			if _, err := io.WriteString(c, "HTTP/1.1 "+line+"\r\n\r\n"); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// hostileWith is hostile with a token of the test's choosing.
func hostileWith(t *testing.T, tok string, h http.HandlerFunc) *agentapi.Agent {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return agent(t, srv.URL, agentapi.StaticToken(agentapi.NewSecret(tok)), agentapi.ClientOptions{Timeout: 2 * time.Second})
}

// A token echoed back is rarely echoed byte for byte: a gateway lower-cases
// a header dump, a JSON encoder escapes it, a log URL-encodes it, a debug
// page base64s a Basic header, a formatter wraps it. In every form it is
// scrubbed from the error, which goes to WARN logs, the Agentrelay-Error
// header of a dead letter and `dlq show`, and only it: the text around it
// stays for the operator.
func TestEchoedTokenIsScrubbedInEveryEncoding(t *testing.T) {
	// Characters that URL and JSON encoders escape, and of both cases.
	const tok = "sk-Live_3f9c+1A/zQ=x"
	percentAll := func(s, format string) string {
		var sb strings.Builder
		for i := 0; i < len(s); i++ {
			fmt.Fprintf(&sb, format, s[i])
		}
		return sb.String()
	}
	jsonAll := percentAll(tok, `\u%04X`)
	b64 := base64.StdEncoding.EncodeToString
	wrap := func(s string, n int, sep string) string {
		var parts []string
		for len(s) > n {
			parts, s = append(parts, s[:n]), s[n:]
		}
		return strings.Join(append(parts, s), sep)
	}
	// inner is the part of an encoding of pre+tok that carries only bits
	// of tok: base64 characters at its edges mix in bits of what surrounds
	// it, and are left.
	inner := func(enc *base64.Encoding, pre string) string {
		e := enc.EncodeToString([]byte(pre + tok))
		return e[(8*len(pre)+5)/6 : 8*len(pre+tok)/6]
	}
	b64Header := b64([]byte("Authorization: Bearer " + tok))
	b64Basic := b64([]byte("user:" + tok))
	b64Wrapped := wrap(b64([]byte("Bearer "+tok)), 8, "\r\n")
	rows := []struct {
		name   string
		form   string // the token as the server echoes it
		secret string // the part of form that carries the token; all of it if empty
	}{
		{"exact", tok, ""},
		{"lower-cased", strings.ToLower(tok), ""},
		{"upper-cased", strings.ToUpper(tok), ""},
		{"JSON \\u escapes", jsonAll, ""},
		{"JSON \\u escapes, lower-case hex, some", strings.ToLower(tok[:4]) + percentAll(tok[4:12], `\u%04x`) + tok[12:], ""},
		{"JSON escapes and \\/", strings.ReplaceAll(tok, "/", `\/`), ""},
		{"query-escaped", url.QueryEscape(tok), ""},
		{"path-escaped", url.PathEscape(tok), ""},
		{"every byte percent-encoded", percentAll(tok, "%%%02x"), ""},
		{"URL-encoded JSON escapes", url.QueryEscape(jsonAll), ""},
		{"lower-cased and query-escaped", strings.ToLower(url.QueryEscape(tok)), ""},
		{"base64", b64([]byte(tok)), inner(base64.StdEncoding, "")},
		{"base64, URL alphabet, unpadded", base64.RawURLEncoding.EncodeToString([]byte(tok)), inner(base64.URLEncoding, "")},
		{"base64 of a whole header", b64Header, inner(base64.StdEncoding, "Authorization: Bearer ")},
		{"base64 of a Basic credential", b64Basic, inner(base64.StdEncoding, "user:")},
		{"base64 wrapped over lines", b64Wrapped, inner(base64.StdEncoding, "Bearer ")},
		{"hex", hex.EncodeToString([]byte(tok)), ""},
		{"split by a line break", tok[:7] + "\r\n" + tok[7:], ""},
		{"split by spaces and a tab", tok[:3] + "  " + tok[3:11] + "\t" + tok[11:], ""},
		{"split by a JSON \\n escape", tok[:9] + `\n` + tok[9:], ""},
		{"split by a zero-width space", tok[:9] + "\u200b" + tok[9:], ""},
		{"split by an invalid byte and a bidi control", tok[:5] + "\xff" + tok[5:12] + "\u202e" + tok[12:], ""},
		{"wrapped and lower-cased", strings.ToLower(wrap(tok, 6, "\n ")), ""},
	}
	around := regexp.MustCompile(`upstream echoed: \S*\[REDACTED\]\S* end`)
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			secret := r.secret
			if secret == "" {
				secret = r.form
			}
			for _, body := range []string{
				"upstream echoed: " + r.form + " end",
				`{"error": {"message": "upstream echoed: ` + jsonEscapeForBody(r.form) + ` end", "type": "proxy_error"}}`,
			} {
				a := hostileWith(t, tok, func(w http.ResponseWriter, _ *http.Request) {
					w.WriteHeader(502)
					_, _ = io.WriteString(w, body)
				})
				_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
				if err == nil {
					t.Fatal("no error")
				}
				got := fmt.Sprintf("%v | %+v", err, err)
				if leak := leaked(got, secret); leak != "" {
					t.Errorf("body %q: %q of the token is in the error: %s", body, leak, got)
				}
				if !around.MatchString(got) {
					t.Errorf("body %q: the text around the token is not kept: %s", body, got)
				}
			}
		})
	}
}

// jsonEscapeForBody writes s as it would stand inside a JSON string.
func jsonEscapeForBody(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// leaked returns a piece of secret (the token, or the text that encodes
// it) found in text, or "" when none is: six characters in a row of it,
// ignoring case and whatever a split inserts (whitespace, a zero-width
// space, and the escapes the sanitiser writes for line breaks).
func leaked(text, secret string) string {
	norm := strings.NewReplacer(`\r`, "", `\n`, "", `\t`, "", `\u200b`, "", "\u200b", "", `\u202e`, "", "\u202e", "", `\xff`, "", "\xff", "",
		" ", "", "\r", "", "\n", "", "\t", "")
	text, secret = strings.ToLower(norm.Replace(text)), strings.ToLower(norm.Replace(secret))
	const n = 6
	for i := 0; i+n <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+n]) {
			return secret[i : i+n]
		}
	}
	return ""
}

// The token echoed outside the body: in the reason phrase, and in a header
// line malformed enough that net/http quotes it in its error.
func TestEchoedTokenIsScrubbedFromStatusAndTransportErrors(t *testing.T) {
	for name, answer := range map[string]string{
		"reason phrase":           "HTTP/1.1 502 Bad Gateway for Bearer " + strings.ToUpper(token) + "\r\nContent-Length: 0\r\n\r\n",
		"malformed header line":   "HTTP/1.1 502 Bad Gateway\r\nBearer " + strings.ToUpper(token) + "\r\n\r\n",
		"malformed status code":   "HTTP/1.1 " + strings.ToUpper(token) + " Bad\r\n\r\n",
		"URL-encoded status code": "HTTP/1.1 " + strings.ReplaceAll(url.PathEscape("/"+token), "-", "%2D") + " Bad\r\n\r\n",
		"no status line":          "X-Echo:Bearer+" + token + "\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			url := rawServer(t, func(c net.Conn) { _, _ = io.WriteString(c, answer) })
			a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: time.Second})
			_, _, err := timedTrigger(t, a)
			if err == nil {
				t.Fatal("no error")
			}
			got := fmt.Sprintf("%v | %+v", err, err)
			if leak := leaked(got, token); leak != "" || !strings.Contains(got, "[REDACTED]") {
				t.Errorf("%q of the token is in the error, or nothing was redacted: %s", leak, got)
			}
		})
	}
}

// Of a JSON error body only what an operator needs is kept: the message,
// type and code. Whatever else a gateway adds (request dumps, headers,
// stack traces) stays out of logs and dead letters.
func TestJSONErrorBodyKeepsOnlyMessageTypeAndCode(t *testing.T) {
	rows := []struct{ body, want string }{
		{`{"error": {"message": "Agent is paused", "type": "invalid_request_error", "code": "agent_paused", "param": null},
		  "debug": {"request_headers": {"x-internal": "hunter2"}}}`, "Agent is paused (type: invalid_request_error, code: agent_paused)"},
		{`{"error": {"message": "Workspace over quota", "code": 4291}}`, "Workspace over quota (code: 4291)"},
		{`{"error": "agent not runnable", "trace": "hunter2"}`, "agent not runnable"},
		{`{"message": "channel disabled", "internal": "hunter2"}`, "channel disabled"},
		{`{"error": {"type": "conflict"}, "internal": "hunter2"}`, "(type: conflict)"},
		// Not a JSON error: the start of the body, sanitised.
		{`<html>502 Bad Gateway</html>`, "<html>502 Bad Gateway</html>"},
		{`{"detail": "nothing we know"}`, `{"detail": "nothing we know"}`},
	}
	for _, r := range rows {
		a := hostile(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(409)
			_, _ = io.WriteString(w, r.body)
		})
		_, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"})
		var ae *agentapi.Error
		if !errors.As(err, &ae) || ae.Class != agentapi.ClassConflict {
			t.Fatalf("body %s: got %v", r.body, err)
		}
		if ae.Body != r.want {
			t.Errorf("body %s\n kept %q\n want %q", r.body, ae.Body, r.want)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("body %s: the error keeps more than the message: %s", r.body, err)
		}
	}
}

// Everything the API (or whatever answers in its place) writes into an
// error goes through one sanitiser: no C0 or C1 control, no bidi or other
// format character, no invalid UTF-8, and a bounded length, whether it came
// in the reason phrase, the body, a JSON message or a header quoted by a
// transport error.
func TestAPITextInErrorsIsSanitisedAndBounded(t *testing.T) {
	const nasty = "a\x1b[2Jb\x07c\u202ed\u2066e\u200ff\u0085g\u009b31mh\u2028i\x00j\ufeffk\x7f"
	long := strings.Repeat("ü", 5000) // multi-byte, so a byte cut would split one
	rows := map[string]string{
		"reason phrase":        "HTTP/1.1 503 Unavailable " + nasty + "\r\nContent-Length: 0\r\n\r\n",
		"long reason phrase":   "HTTP/1.1 503 " + long + "\r\nContent-Length: 0\r\n\r\n",
		"body":                 "HTTP/1.1 500 Oops\r\nContent-Length: 54\r\n\r\n" + nasty + "\xff\xfe",
		"long body":            "HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n" + long,
		"JSON message":         "HTTP/1.1 409 Conflict\r\nConnection: close\r\n\r\n" + `{"error": {"message": "x\u001b[31m\u202e\u0007 y", "type": "t\u2067", "code": "c\u0000"}}`,
		"long JSON message":    "HTTP/1.1 409 Conflict\r\nConnection: close\r\n\r\n" + `{"error": {"message": "` + strings.Repeat("\\u202e", 300) + `", "type": "` + strings.Repeat("t", 1000) + `"}}`,
		"quoted header line":   "HTTP/1.1 200 OK\r\nEvil " + nasty + "\r\n\r\n",
		"quoted status line":   "HTTP/1.1 2" + nasty + "\r\n\r\n",
		"garbage for a status": nasty + "\r\n\r\n",
	}
	for name, answer := range rows {
		t.Run(name, func(t *testing.T) {
			url := rawServer(t, func(c net.Conn) { _, _ = io.WriteString(c, answer) })
			a := agent(t, url, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Timeout: time.Second})
			_, _, err := timedTrigger(t, a)
			if err == nil {
				t.Fatal("no error")
			}
			var ae *agentapi.Error
			if !errors.As(err, &ae) {
				t.Fatalf("%T %v", err, err)
			}
			for field, s := range map[string]string{"Error()": err.Error(), "Status": ae.Status, "Body": ae.Body} {
				if bad := unsafeText(s); bad != "" {
					t.Errorf("%s holds %s: %q", field, bad, s)
				}
			}
			if len(ae.Status) > 100 || len(ae.Body) > agentapi.MaxErrorText || len(err.Error()) > 1024 {
				t.Errorf("unbounded: status %d bytes, body %d bytes, error %d bytes", len(ae.Status), len(ae.Body), len(err.Error()))
			}
		})
	}
}

// unsafeText names what in s must not reach a log line or a terminal.
func unsafeText(s string) string {
	if !utf8.ValidString(s) {
		return "invalid UTF-8"
	}
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0:
			return fmt.Sprintf("control character %U", r)
		case unicode.Is(unicode.Cf, r) || unicode.In(r, unicode.Zl, unicode.Zp):
			return fmt.Sprintf("format character %U", r)
		}
	}
	return ""
}

// lateReader answers at once and leaves the request body to be read after
// RoundTrip has returned, as net/http's transport does when a server answers
// before it has read the whole request: the RoundTripper contract allows a
// body to be read and closed after RoundTrip returns.
type lateReader struct{ bodies chan io.ReadCloser }

func (l *lateReader) RoundTrip(req *http.Request) (*http.Response, error) {
	l.bodies <- req.Body
	return &http.Response{StatusCode: 400, Status: "400 Bad Request", Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// A request body still belongs to the transport after the call returns:
// the next call must not write into it. (A pooled body buffer, recycled when
// Trigger returned, was overwritten by the next call's body while the
// transport was still sending it.)
func TestRequestBodyIsNotReusedWhileTheTransportMayReadIt(t *testing.T) {
	lr := &lateReader{bodies: make(chan io.ReadCloser, 1)}
	a := agent(t, "https://api.example.test", agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{Transport: lr})
	ctx := context.Background()
	for i := range 20 {
		first := agentapi.Event{Input: fmt.Sprintf("first %d", i)}
		_, _ = a.Trigger(ctx, first)
		body := <-lr.bodies
		// The transport reads the first body while the next call is
		// built: the race detector sees any write into it.
		read := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(body)
			_ = body.Close()
			read <- b
		}()
		_, _ = a.Trigger(ctx, agentapi.Event{Input: strings.Repeat("second, and longer ", 4)})
		<-lr.bodies
		want, err := first.Body()
		if err != nil {
			t.Fatal(err)
		}
		if got := <-read; string(got) != string(want) {
			t.Fatalf("call %d: the transport read %s, want %s", i, got, want)
		}
	}
}
