package agentapi_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
)

// The seed corpora run as ordinary tests in `make test`; run a fuzzer with
// e.g. go test -run='^$' -fuzz=FuzzParseRetryAfter -fuzztime=60s ./agentapi

// maxRetryAfter is ParseRetryAfter's documented ceiling: a year.
const maxRetryAfter = 365 * 24 * time.Hour

// ParseRetryAfter reads delay-seconds or an HTTP-date and nothing else; what
// it returns is never negative and never more than a year, whatever the
// server sent.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{
		"0", "1", "120", " 5 ", "-5", "+5", "1.5", "1e3", "0x10", "soon", "", " ", "\t7\t",
		"99999999999999999999999", "18446744073709551615", "18446744073709551616", "31536000", "31536001",
		now.Add(30 * time.Second).Format(http.TimeFormat), now.Add(-time.Hour).Format(http.TimeFormat),
		"Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
		"Sun Nov  6 08:49:37 1994", "Mon, 99 Foo 2026", "5\r\nX-Injected: 1", "\x00", "٣", // Arabic-Indic three
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := agentapi.ParseRetryAfter(v, now)
		if !ok {
			if d != 0 {
				t.Errorf("ParseRetryAfter(%q) = %v, false: a refused value must give 0", v, d)
			}
			return
		}
		if d < 0 || d > maxRetryAfter {
			t.Errorf("ParseRetryAfter(%q) = %v: outside [0, %v]", v, d, maxRetryAfter)
		}
		trimmed := strings.TrimSpace(v)
		if trimmed[0] >= '0' && trimmed[0] <= '9' {
			// Delay-seconds: digits only, the value itself up to the
			// ceiling.
			n, err := strconv.ParseUint(trimmed, 10, 64)
			want := maxRetryAfter
			switch {
			case err != nil && !errors.Is(err, strconv.ErrRange):
				t.Fatalf("ParseRetryAfter(%q) accepted a number that is not all digits", v)
			case err == nil && n <= uint64(maxRetryAfter/time.Second):
				want = time.Duration(n) * time.Second
			}
			if d != want {
				t.Errorf("ParseRetryAfter(%q) = %v, want %v", v, d, want)
			}
			return
		}
		if _, err := http.ParseTime(trimmed); err != nil {
			t.Errorf("ParseRetryAfter(%q) accepted something that is neither seconds nor an HTTP-date", v)
		}
	})
}

// captureTransport answers 202 to every request and remembers the last one:
// what the client would have put on the wire.
type captureTransport struct{ req *http.Request }

func (c *captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.req = r
	return &http.Response{StatusCode: http.StatusAccepted, Status: "202 Accepted", Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

// A trigger id can never change where a request goes: any id ParseTriggerID
// accepts gives a request to exactly /v1/workspace_agents/<id>/trigger on the
// configured host, with no query or fragment, that parses back to the same
// path; and it is an id the API itself accepts. Refusals say so without
// quoting the id at length or raw.
func FuzzParseTriggerID(f *testing.F) {
	for _, s := range []string{
		"agtch_complaints_123", "agtch_A-b_9", "agtch_", "agtch", "", "AGTCH_x", "agtch_a/b", "agtch_../admin",
		"agtch_a%2Fb", "agtch_%2e%2e", "agtch_a?x=1", "agtch_a#f", "agtch_a b", "agtch_a\r\nHost: evil", "agtch_a\x00",
		"agtch_аbc", "agtch_ａ", "agtch_a.b", "agtch_a;b", "agtch_a\\b", "agtch_@evil.com", "agtch_a:b",
		"agtch_" + strings.Repeat("x", 122), "agtch_" + strings.Repeat("x", 123), "agtch_\x1b[2J",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := agentapi.ParseTriggerID(s)
		if err != nil {
			if !errors.Is(err, agentapi.ErrInvalidTriggerID) {
				t.Errorf("ParseTriggerID(%q): error %v does not wrap ErrInvalidTriggerID", s, err)
			}
			if msg := err.Error(); len(msg) > 300 || strings.ContainsFunc(msg, isControl) || !utf8.ValidString(msg) {
				t.Errorf("ParseTriggerID(%q): error is unbounded or carries raw control bytes: %q", s, msg)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("ParseTriggerID(%q) = %q", s, id)
		}
		if !emulator.ValidTriggerID(s) {
			t.Errorf("ParseTriggerID accepts %q, which the API answers 404 as malformed", s)
		}
		ct := &captureTransport{}
		c, err := agentapi.NewClient("https://api.example.com/base", agentapi.ClientOptions{Transport: ct})
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.Agent(id, agentapi.StaticToken(agentapi.NewSecret("tok")))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Trigger(context.Background(), agentapi.Event{Input: "x"}); err != nil {
			t.Fatalf("Trigger: %v", err)
		}
		want := "/base/v1/workspace_agents/" + s + "/trigger"
		u := ct.req.URL
		if u.Host != "api.example.com" || u.Path != want || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			t.Errorf("id %q: request to %s (host %q path %q query %q)", s, u, u.Host, u.Path, u.RawQuery)
		}
		back, err := url.Parse(u.String())
		if err != nil || back.Path != want || back.Host != u.Host || back.EscapedPath() != want {
			t.Errorf("id %q: request URL %s does not parse back to %s (%v)", s, u, want, err)
		}
	})
}

// An idempotency key is accepted exactly when it is 1 to 255 bytes of the
// key alphabet without "..", and an accepted key survives the trip through
// an HTTP header unchanged: it cannot split a header, be folded or be
// decoded into another key.
func FuzzValidateIdempotencyKey(f *testing.F) {
	for _, s := range []string{
		"evt-1", "order-7:v2", "01J9ZQ3N4Y5X6W7V8T9S0R1Q2P", "550e8400-e29b-41d4-a716-446655440000", "a.b", "a..b", "..", ".",
		"EVENTS:42:1732800000123456789", "a/b", "a%2Fb", "a b", "a\r\nX-Evil: 1", "a\x00", "ｏrder", "a\\b", "~+=@_-:",
		strings.Repeat("k", 255), strings.Repeat("k", 256), "", "\x1b[2J", "a\tb",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, k string) {
		err := agentapi.ValidateIdempotencyKey(k)
		want := len(k) >= 1 && len(k) <= agentapi.MaxIdempotencyKeyLen && !strings.Contains(k, "..")
		for i := 0; i < len(k) && want; i++ {
			want = strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@+=~-", k[i]) >= 0
		}
		if (err == nil) != want {
			t.Fatalf("ValidateIdempotencyKey(%q) = %v, want accepted=%v", k, err, want)
		}
		if err != nil {
			if !errors.Is(err, agentapi.ErrInvalidIdempotencyKey) || strings.ContainsFunc(err.Error(), isControl) || len(err.Error()) > 200 {
				t.Errorf("ValidateIdempotencyKey(%q): bad error %q", k, err)
			}
			return
		}
		var buf bytes.Buffer
		if err := (http.Header{"Idempotency-Key": {k}}).Write(&buf); err != nil {
			t.Fatal(err)
		}
		buf.WriteString("\r\n")
		h, err := textproto.NewReader(bufio.NewReader(&buf)).ReadMIMEHeader()
		if err != nil || len(h) != 1 || len(h["Idempotency-Key"]) != 1 || h.Get("Idempotency-Key") != k {
			t.Errorf("key %q does not survive an HTTP header: %v %v", k, h, err)
		}
	})
}

// SanitizeText, used for every piece of an API answer that reaches a log or
// a terminal, leaves only printable characters and spaces: no control
// character, escape sequence, bidi override or invalid UTF-8. Clean text is
// left alone.
func FuzzSanitizeText(f *testing.F) {
	for _, s := range []string{"plain", "bad\x1b[2Jinput\r\nX: \xff", "\x9b31m", "\u202eevil", "tab\there", "\x00", "é😀", "\ufffd", "\xf4\x90\x80\x80"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := agentapi.SanitizeText(b)
		if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }) {
			t.Errorf("SanitizeText(%q) = %q: something unprintable remains", b, s)
		}
		clean := utf8.Valid(b) && !bytes.ContainsFunc(b, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) })
		if clean && s != string(b) {
			t.Errorf("SanitizeText(%q) = %q: changed clean text", b, s)
		}
	})
}

// isControl reports C0 and C1 control characters and DEL.
func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0)
}
