package agentapi_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

func timedTrigger(t *testing.T, a *agentapi.Agent) (int, error, time.Duration) {
	t.Helper()
	start := time.Now()
	status, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "hostile-1"})
	return status, err, time.Since(start)
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
	status, err, took := timedTrigger(t, a)
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
	status, err, took := timedTrigger(t, a)
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
	status, err, took := timedTrigger(t, a)
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
	_, err, _ := timedTrigger(t, a)
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
	status, err, took := timedTrigger(t, a)
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
		status, err, _ := timedTrigger(t, a)
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
