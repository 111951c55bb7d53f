package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/agentrelay/agentrelay/internal/testenv/wait"
)

const (
	tokA     = "tok-a"   // may trigger trigA only
	tokAll   = "tok-all" // may trigger any id
	trigA    = "agtch_alpha"
	trigB    = "agtch_beta-2"
	trigOff  = "agtch_off" // registered, not runnable
	okBody   = `{"input":"summarise the escalation","conversation_key":"thread-1"}`
	waitLong = 5 * time.Second // generous bound for "eventually"; never a sleep
)

// fixture is an emulator with the standard tokens and triggers, served on a
// loopback port, plus a client whose connections are closed at cleanup.
type fixture struct {
	e      *Emulator
	srv    *Server
	client *http.Client
}

func newFixture(t *testing.T, opts ...Option) *fixture {
	t.Helper()
	base := []Option{
		WithToken(tokA, trigA),
		WithToken(tokAll, "*"),
		WithTrigger(trigA, true),
		WithTrigger(trigB, true),
		WithTrigger(trigOff, false),
	}
	e := New(append(base, opts...)...)
	srv, err := e.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &fixture{e: e, srv: srv, client: &http.Client{Transport: tr}}
}

// request builds a trigger call. token "" sends no Authorization header and
// key "" no Idempotency-Key.
func (f *fixture) request(t *testing.T, id, token, key, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/workspace_agents/"+id+"/trigger", strings.NewReader(body))
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return req
}

type result struct {
	status int
	header http.Header
	body   string
}

// send performs req and returns the response. It returns a transport error
// instead of failing, so goroutines can use it.
func send(client *http.Client, req *http.Request) (result, error) {
	resp, err := client.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, err
	}
	return result{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

// mustSend is send for the test goroutine: a transport error fails the test.
func (f *fixture) mustSend(t *testing.T, req *http.Request) result {
	t.Helper()
	res, err := send(f.client, req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	return res
}

// trigger sends a well-formed call and returns its status.
func (f *fixture) trigger(t *testing.T, id, token, key string) int {
	t.Helper()
	return f.mustSend(t, f.request(t, id, token, key, okBody)).status
}

func errorMessage(t *testing.T, res result) string {
	t.Helper()
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var body apiError
	if err := json.Unmarshal([]byte(res.body), &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", res.body, err)
	}
	if body.Error.Message == "" {
		t.Errorf("error body %q has no error.message", res.body)
	}
	return body.Error.Message
}

func TestAcceptedEventIsRecordedAndAnsweredWithEmptyBody(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	f := newFixture(t, WithClock(func() time.Time { return at }))

	res := f.mustSend(t, f.request(t, trigA, tokA, "msg-1", okBody))

	if res.status != http.StatusAccepted {
		t.Fatalf("status = %d, want 202; body %q", res.status, res.body)
	}
	if res.body != "" || res.header.Get("Content-Length") != "0" {
		t.Errorf("202 must have no body: Content-Length %q, body %q", res.header.Get("Content-Length"), res.body)
	}
	want := []Event{{
		Seq:             1,
		TriggerID:       trigA,
		IdempotencyKey:  "msg-1",
		Input:           "summarise the escalation",
		ConversationKey: "thread-1",
		AcceptedAt:      at,
	}}
	if got := f.e.Ledger(); !slices.Equal(got, want) {
		t.Errorf("Ledger() = %+v, want %+v", got, want)
	}
}

// TestStatusTable walks through every row of the handling order. Each case
// runs on a fresh emulator, so ledger assertions are per case.
func TestStatusTable(t *testing.T) {
	exactlyMiB := `{"input":"` + strings.Repeat("a", MaxBodyBytes-len(`{"input":""}`)) + `"}`
	overMiB := `{"input":"` + strings.Repeat("a", MaxBodyBytes-len(`{"input":""}`)+1) + `"}`
	malformedIDs := []string{"agtch_", "trig_123", "AGTCH_abc", "agtch_a.b", "agtch_" + strings.Repeat("x", 129)}

	tests := []statusCase{
		{name: "accepted", want: 202},
		{name: "bearer scheme is case-insensitive", authz: "bEARER " + tokA, want: 202},
		{name: "content type with charset", ctype: "application/json; charset=utf-8", want: 202},
		{name: "content type is case-insensitive", ctype: "Application/JSON", want: 202},
		{name: "unknown fields are tolerated", body: `{"input":"x","extra":[1,{"a":null}]}`, want: 202},
		{name: "conversation_key null", body: `{"input":"x","conversation_key":null}`, want: 202},
		{name: "conversation_key absent", body: `{"input":"x"}`, want: 202},
		{name: "wildcard token", token: tokAll, id: trigB, want: 202},
		{name: "body of exactly 1 MiB", body: exactlyMiB, want: 202},

		{name: "missing authorization", token: "-", want: 401},
		{name: "wrong scheme", authz: "Basic " + tokA, want: 401},
		{name: "scheme without token", authz: "Bearer", want: 401},
		{name: "token without scheme", authz: tokA, want: 401},
		{name: "unknown token", token: "nope", want: 401},
		{name: "revoked token", setup: func(e *Emulator) { e.RevokeToken(tokA) }, want: 401},
		{name: "auth is checked before existence", token: "nope", id: "agtch_missing", want: 401},
		{name: "auth is checked before the body", token: "-", body: "garbage", want: 401},

		{name: "unknown trigger", token: tokAll, id: "agtch_missing", want: 404},
		{name: "existence is checked before permission", id: "agtch_missing", want: 404},
		{name: "no trigger segment", path: "/v1/workspace_agents/trigger", want: 404},
		{name: "empty trigger segment", path: "/v1/workspace_agents//trigger", want: 404},
		{name: "extra segment", path: "/v1/workspace_agents/" + trigA + "/trigger/now", want: 404},
		{name: "two id segments are another path", method: http.MethodGet, path: "/v1/workspace_agents/" + trigA + "/" + trigB + "/trigger", want: 404},
		{name: "other path", path: "/v1/workspace_agents", want: 404},
		{name: "unknown path is 404 even for GET", method: http.MethodGet, path: "/", want: 404},

		{name: "GET on the route", method: http.MethodGet, want: 405},
		{name: "PUT on the route", method: http.MethodPut, want: 405},
		{name: "DELETE on the route", method: http.MethodDelete, want: 405},

		{name: "token lacks permission", id: trigB, want: 403},
		{name: "permission is checked before the body", id: trigB, body: "garbage", want: 403},

		{name: "not runnable", token: tokAll, id: trigOff, want: 409},
		{name: "body is checked before runnable", token: tokAll, id: trigOff, body: "{}", want: 400},

		{name: "no content type", ctype: "-", want: 400},
		{name: "text/plain", ctype: "text/plain", want: 400},
		{name: "json lookalike media type", ctype: "application/jsonx", want: 400},
		{name: "empty body", noBody: true, want: 400},
		{name: "invalid JSON", body: `{"input":`, want: 400},
		{name: "trailing data", body: `{"input":"x"} {}`, want: 400},
		{name: "array", body: `[{"input":"x"}]`, want: 400},
		{name: "null", body: `null`, want: 400},
		{name: "string", body: `"x"`, want: 400},
		{name: "input missing", body: `{"conversation_key":"k"}`, want: 400},
		{name: "input empty", body: `{"input":""}`, want: 400},
		{name: "input null", body: `{"input":null}`, want: 400},
		{name: "input number", body: `{"input":42}`, want: 400},
		{name: "input object", body: `{"input":{"text":"x"}}`, want: 400},
		{name: "field names are case-sensitive", body: `{"Input":"x"}`, want: 400},
		{name: "conversation_key number", body: `{"input":"x","conversation_key":7}`, want: 400},
		{name: "conversation_key object", body: `{"input":"x","conversation_key":{}}`, want: 400},
		{name: "invalid UTF-8", body: "{\"input\":\"\xff\xfe\"}", want: 400},

		{name: "body over 1 MiB", body: overMiB, want: 413},
	}
	for _, id := range malformedIDs {
		tests = append(tests, statusCase{
			// Registered, so only the format check can reject it.
			name:  "malformed id " + id[:min(len(id), 16)],
			id:    id,
			token: tokAll,
			setup: func(e *Emulator) { e.AddTrigger(id, true) },
			want:  404,
		})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(f.e)
			}
			id := cmpOr(tc.id, trigA)
			body := cmpOr(tc.body, okBody)
			if tc.noBody {
				body = ""
			}
			req := f.request(t, id, "", "", body)
			req.Method = cmpOr(tc.method, http.MethodPost)
			if tc.path != "" {
				req.URL.Path = tc.path
			}
			switch {
			case tc.authz != "":
				req.Header.Set("Authorization", tc.authz)
			case tc.token != "-":
				req.Header.Set("Authorization", "Bearer "+cmpOr(tc.token, tokA))
			}
			switch tc.ctype {
			case "-":
				req.Header.Del("Content-Type")
			case "":
			default:
				req.Header.Set("Content-Type", tc.ctype)
			}

			res := f.mustSend(t, req)

			if res.status != tc.want {
				t.Fatalf("status = %d, want %d; body %q", res.status, tc.want, res.body)
			}
			wantLedger := 0
			switch tc.want {
			case http.StatusAccepted:
				wantLedger = 1
				if res.body != "" || res.header.Get("Content-Length") != "0" {
					t.Errorf("202 with Content-Length %q and body %q, want empty", res.header.Get("Content-Length"), res.body)
				}
			case http.StatusUnauthorized:
				if got := res.header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("WWW-Authenticate = %q, want Bearer", got)
				}
				errorMessage(t, res)
			case http.StatusMethodNotAllowed:
				if got := res.header.Get("Allow"); got != http.MethodPost {
					t.Errorf("Allow = %q, want POST", got)
				}
				errorMessage(t, res)
			default:
				errorMessage(t, res)
			}
			if got := f.e.LedgerLen(); got != wantLedger {
				t.Errorf("LedgerLen() = %d, want %d", got, wantLedger)
			}
			if got := f.e.Stats().ByStatus[tc.want]; got != 1 {
				t.Errorf("Stats().ByStatus[%d] = %d, want 1", tc.want, got)
			}
		})
	}
}

// statusCase is one row of TestStatusTable. Empty fields take the defaults
// of a well-formed call.
type statusCase struct {
	name   string
	id     string // default trigA
	token  string // default tokA; "-" for no header
	authz  string // raw Authorization value; overrides token
	method string // default POST
	path   string // raw path; overrides id
	ctype  string // default application/json; "-" for no header
	body   string // default okBody
	noBody bool   // send an empty body
	setup  func(*Emulator)
	want   int
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestOversizedChunkedBody covers a body whose length is not declared up
// front, so the limit is enforced while reading rather than from
// Content-Length.
func TestOversizedChunkedBody(t *testing.T) {
	f := newFixture(t)
	big := strings.Repeat("a", MaxBodyBytes)
	body := io.MultiReader(strings.NewReader(`{"input":"`), strings.NewReader(big), strings.NewReader(`"}`))
	req := f.request(t, trigA, tokA, "", "")
	req.Body = io.NopCloser(body)
	req.ContentLength = -1

	res := f.mustSend(t, req)

	if res.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413", res.status)
	}
	errorMessage(t, res)
	if n := f.e.LedgerLen(); n != 0 {
		t.Errorf("LedgerLen() = %d, want 0", n)
	}
}

func TestIdempotency(t *testing.T) {
	t.Run("same key twice enqueues once", func(t *testing.T) {
		f := newFixture(t)
		for i := range 2 {
			if got := f.trigger(t, trigA, tokA, "k1"); got != http.StatusAccepted {
				t.Fatalf("call %d: status %d, want 202", i+1, got)
			}
		}
		if n := f.e.LedgerLen(); n != 1 {
			t.Errorf("LedgerLen() = %d, want 1", n)
		}
		if n := f.e.Accepted(trigA, "k1"); n != 1 {
			t.Errorf("Accepted(trigA, k1) = %d, want 1", n)
		}
		s := f.e.Stats()
		if s.Requests != 2 || s.Accepted != 1 || s.Replays != 1 || s.ByStatus[202] != 2 {
			t.Errorf("Stats() = %+v, want 2 requests, 1 accepted, 1 replay, two 202s", s)
		}
		reqs := f.e.Requests()
		if len(reqs) != 2 || reqs[0].Replay || !reqs[1].Replay {
			t.Errorf("Requests() replay flags = %+v, want second only", reqs)
		}
	})
	t.Run("same key on two triggers enqueues twice", func(t *testing.T) {
		f := newFixture(t)
		for _, id := range []string{trigA, trigB} {
			if got := f.trigger(t, id, tokAll, "k1"); got != http.StatusAccepted {
				t.Fatalf("%s: status %d, want 202", id, got)
			}
		}
		if f.e.Accepted(trigA, "k1") != 1 || f.e.Accepted(trigB, "k1") != 1 || f.e.LedgerLen() != 2 {
			t.Errorf("Ledger() = %+v, want one event per trigger", f.e.Ledger())
		}
	})
	t.Run("no key enqueues every time", func(t *testing.T) {
		f := newFixture(t)
		for i := range 2 {
			if got := f.trigger(t, trigA, tokA, ""); got != http.StatusAccepted {
				t.Fatalf("call %d: status %d, want 202", i+1, got)
			}
		}
		if n := f.e.Accepted(trigA, ""); n != 2 {
			t.Errorf("Accepted(trigA, \"\") = %d, want 2", n)
		}
		if s := f.e.Stats(); s.Replays != 0 {
			t.Errorf("Replays = %d, want 0", s.Replays)
		}
	})
	t.Run("replay keeps the original event", func(t *testing.T) {
		f := newFixture(t)
		f.mustSend(t, f.request(t, trigA, tokA, "k1", `{"input":"first"}`))
		f.mustSend(t, f.request(t, trigA, tokA, "k1", `{"input":"second"}`))
		if l := f.e.Ledger(); len(l) != 1 || l[0].Input != "first" {
			t.Errorf("Ledger() = %+v, want only the first input", l)
		}
	})
	t.Run("rejected request does not reserve the key", func(t *testing.T) {
		f := newFixture(t)
		if got := f.trigger(t, trigOff, tokAll, "k1"); got != http.StatusConflict {
			t.Fatalf("status %d, want 409", got)
		}
		f.e.SetRunnable(trigOff, true)
		if got := f.trigger(t, trigOff, tokAll, "k1"); got != http.StatusAccepted {
			t.Fatalf("status %d, want 202", got)
		}
		if s := f.e.Stats(); s.Accepted != 1 || s.Replays != 0 {
			t.Errorf("Stats() = %+v, want a real accept, not a replay", s)
		}
	})
}

func TestConcurrentSameKeyEnqueuesExactlyOnce(t *testing.T) {
	f := newFixture(t)
	const n = 50
	start := make(chan struct{})
	statuses := make(chan int, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		req := f.request(t, trigA, tokA, "same-key", okBody)
		wg.Go(func() {
			<-start
			res, err := send(f.client, req)
			if err != nil {
				errs <- err
				return
			}
			statuses <- res.status
		})
	}
	close(start)
	wg.Wait()
	close(statuses)
	close(errs)

	for err := range errs {
		t.Errorf("transport error: %v", err)
	}
	for s := range statuses {
		if s != http.StatusAccepted {
			t.Errorf("status %d, want 202", s)
		}
	}
	if got := f.e.Accepted(trigA, "same-key"); got != 1 {
		t.Errorf("Accepted = %d, want exactly 1", got)
	}
	if s := f.e.Stats(); s.Accepted != 1 || s.Replays != n-1 {
		t.Errorf("Stats() accepted %d replays %d, want 1 and %d", s.Accepted, s.Replays, n-1)
	}
}

func TestRunnable(t *testing.T) {
	f := newFixture(t)
	if got := f.trigger(t, trigA, tokA, "k1"); got != http.StatusAccepted {
		t.Fatalf("first call: %d, want 202", got)
	}

	f.e.SetRunnable(trigA, false)
	if got := f.trigger(t, trigA, tokA, "k1"); got != http.StatusAccepted {
		t.Errorf("replay of an accepted key after SetRunnable(false): %d, want 202", got)
	}
	if got := f.trigger(t, trigA, tokA, "k2"); got != http.StatusConflict {
		t.Errorf("new key on a non-runnable trigger: %d, want 409", got)
	}

	f.e.SetRunnable(trigA, true)
	if got := f.trigger(t, trigA, tokA, "k2"); got != http.StatusAccepted {
		t.Errorf("after SetRunnable(true): %d, want 202", got)
	}
	if n := f.e.LedgerLen(); n != 2 {
		t.Errorf("LedgerLen() = %d, want 2", n)
	}
}

func TestRuntimeControl(t *testing.T) {
	f := newFixture(t)
	const newTrig = "agtch_new"

	if got := f.trigger(t, newTrig, tokAll, ""); got != http.StatusNotFound {
		t.Errorf("before AddTrigger: %d, want 404", got)
	}
	f.e.SetRunnable(newTrig, true) // unknown ids are ignored
	if got := f.trigger(t, newTrig, tokAll, ""); got != http.StatusNotFound {
		t.Errorf("SetRunnable must not register: %d, want 404", got)
	}
	f.e.AddTrigger(newTrig, true)
	if got := f.trigger(t, newTrig, tokAll, ""); got != http.StatusAccepted {
		t.Errorf("after AddTrigger: %d, want 202", got)
	}

	f.e.AddToken("tok-new")
	if got := f.trigger(t, trigA, "tok-new", ""); got != http.StatusForbidden {
		t.Errorf("token without ids: %d, want 403", got)
	}
	f.e.AddToken("tok-new", trigA)
	if got := f.trigger(t, trigA, "tok-new", ""); got != http.StatusAccepted {
		t.Errorf("after granting trigA: %d, want 202", got)
	}

	f.e.RevokeToken("tok-new")
	if got := f.trigger(t, trigA, "tok-new", ""); got != http.StatusUnauthorized {
		t.Errorf("after RevokeToken: %d, want 401", got)
	}
	f.e.AddToken("tok-new", trigB)
	if got := f.trigger(t, trigB, "tok-new", ""); got != http.StatusAccepted {
		t.Errorf("re-added token: %d, want 202", got)
	}
	if got := f.trigger(t, trigA, "tok-new", ""); got != http.StatusForbidden {
		t.Errorf("re-added token must not keep old grants: %d, want 403", got)
	}

	f.e.RemoveTrigger(newTrig)
	if got := f.trigger(t, newTrig, tokAll, ""); got != http.StatusNotFound {
		t.Errorf("after RemoveTrigger: %d, want 404", got)
	}
}

func TestScriptedFaultsApplyInOrder(t *testing.T) {
	f := newFixture(t)
	f.e.Script(
		Fault{Kind: FaultServerError, Status: 500},
		Fault{Kind: FaultRateLimit, RetryAfter: "7"},
		Fault{Kind: FaultServerError, RetryAfter: "30"},
		Fault{}, // one clean request
		Fault{Kind: FaultServerError, Status: 502},
	)
	want := []struct {
		status     int
		retryAfter string
	}{{500, ""}, {429, "7"}, {503, "30"}, {202, ""}, {502, ""}, {202, ""}}

	for i, w := range want {
		res := f.mustSend(t, f.request(t, trigA, tokA, fmt.Sprint("k", i), okBody))
		if res.status != w.status || res.header.Get("Retry-After") != w.retryAfter {
			t.Errorf("request %d: status %d Retry-After %q, want %d %q",
				i+1, res.status, res.header.Get("Retry-After"), w.status, w.retryAfter)
		}
	}
	if n := f.e.ScriptLen(); n != 0 {
		t.Errorf("ScriptLen() = %d, want 0", n)
	}
	s := f.e.Stats()
	if s.Faults[FaultServerError] != 3 || s.Faults[FaultRateLimit] != 1 {
		t.Errorf("Stats().Faults = %v, want 3 server_error and 1 rate_limit", s.Faults)
	}
	if n := f.e.LedgerLen(); n != 2 {
		t.Errorf("LedgerLen() = %d, want 2 (faulted requests enqueue nothing)", n)
	}
}

// A fault tied to an input meets that event every time (an API bug one
// input triggers), before the script and the random draw, and only it.
func TestInputFaultsMeetTheirEventEveryTime(t *testing.T) {
	f := newFixture(t)
	f.e.SetFaults(Faults{ByInput: []InputFault{
		{Marker: "#bad-500", Fault: Fault{Kind: FaultServerError, Status: 500}},
		{Marker: "#limited", Fault: Fault{Kind: FaultRateLimit, RetryAfter: "2"}},
	}})
	f.e.Script(Fault{Kind: FaultServerError, Status: 502})
	for i := range 3 {
		res := f.mustSend(t, f.request(t, trigA, tokA, fmt.Sprint("bad", i), `{"input":"x #bad-500 y"}`))
		if res.status != 500 {
			t.Errorf("bad event, call %d: %d, want 500 every time", i, res.status)
		}
		res = f.mustSend(t, f.request(t, trigA, tokA, fmt.Sprint("lim", i), `{"input":"#limited"}`))
		if res.status != 429 || res.header.Get("Retry-After") != "2" {
			t.Errorf("limited event, call %d: %d %q, want 429 with Retry-After 2", i, res.status, res.header.Get("Retry-After"))
		}
	}
	if n := f.e.ScriptLen(); n != 1 {
		t.Errorf("the input faults used the script: %d left, want 1", n)
	}
	if res := f.mustSend(t, f.request(t, trigA, tokA, "good", okBody)); res.status != 502 {
		t.Errorf("a good event got %d, want the scripted 502", res.status)
	}
	if res := f.mustSend(t, f.request(t, trigA, tokA, "good2", okBody)); res.status != 202 {
		t.Errorf("a good event got %d, want 202", res.status)
	}
}

func TestScriptedFaultTriggerFilter(t *testing.T) {
	f := newFixture(t)
	f.e.Script(Fault{Kind: FaultServerError, TriggerID: trigB})

	if got := f.trigger(t, trigA, tokAll, ""); got != http.StatusAccepted {
		t.Errorf("other trigger: %d, want 202", got)
	}
	if n := f.e.ScriptLen(); n != 1 {
		t.Fatalf("fault for trigB was consumed by trigA: ScriptLen() = %d", n)
	}
	if got := f.trigger(t, trigB, tokAll, ""); got != http.StatusServiceUnavailable {
		t.Errorf("target trigger: %d, want 503", got)
	}
	if got := f.trigger(t, trigB, tokAll, ""); got != http.StatusAccepted {
		t.Errorf("after the one-shot fault: %d, want 202", got)
	}
}

func TestOutageComesBeforeAuthButAfterRouting(t *testing.T) {
	f := newFixture(t)
	f.e.Script(Fault{Kind: FaultServerError}, Fault{Kind: FaultRateLimit})

	get := f.request(t, trigA, tokA, "", okBody)
	get.Method = http.MethodGet
	if res := f.mustSend(t, get); res.status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", res.status)
	}
	if n := f.e.ScriptLen(); n != 2 {
		t.Fatalf("routing errors must not use up faults: ScriptLen() = %d", n)
	}
	if got := f.trigger(t, trigA, "", ""); got != http.StatusServiceUnavailable {
		t.Errorf("no credentials during an outage: %d, want 503", got)
	}
	if got := f.trigger(t, "agtch_missing", "bad", ""); got != http.StatusTooManyRequests {
		t.Errorf("bad token and unknown id while rate limited: %d, want 429", got)
	}
}

func TestRateLimitCarriesRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults Faults
		script []Fault
		want   string
	}{
		{name: "scripted default", script: []Fault{{Kind: FaultRateLimit}}, want: "1"},
		{name: "scripted HTTP-date", script: []Fault{{Kind: FaultRateLimit, RetryAfter: "Wed, 21 Oct 2015 07:28:00 GMT"}}, want: "Wed, 21 Oct 2015 07:28:00 GMT"},
		{name: "scripted garbage", script: []Fault{{Kind: FaultRateLimit, RetryAfter: "soon-ish"}}, want: "soon-ish"},
		{name: "probabilistic default", faults: Faults{RateLimitRate: 1}, want: "1"},
		{name: "probabilistic configured", faults: Faults{RateLimitRate: 1, RetryAfter: "120"}, want: "120"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, WithFaults(tc.faults))
			f.e.Script(tc.script...)
			res := f.mustSend(t, f.request(t, trigA, tokA, "", okBody))
			if res.status != http.StatusTooManyRequests {
				t.Fatalf("status = %d, want 429", res.status)
			}
			if got := res.header.Get("Retry-After"); got != tc.want {
				t.Errorf("Retry-After = %q, want %q", got, tc.want)
			}
			errorMessage(t, res)
		})
	}
}

func TestServerErrorBodyAndRetryAfter(t *testing.T) {
	f := newFixture(t, WithFaults(Faults{ServerErrorRate: 1, RetryAfter: "5"}))
	res := f.mustSend(t, f.request(t, trigA, tokA, "", okBody))
	if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") != "5" {
		t.Errorf("got %d Retry-After %q, want 503 with Retry-After 5", res.status, res.header.Get("Retry-After"))
	}
	if res.body == "" || len(res.body) > 200 {
		t.Errorf("body %q, want a short text", res.body)
	}
}

func TestUnknownFaultKindFailsLoudly(t *testing.T) {
	f := newFixture(t)
	f.e.Script(Fault{Kind: "hnag"})
	res := f.mustSend(t, f.request(t, trigA, tokA, "", okBody))
	if res.status != http.StatusInternalServerError || !strings.Contains(res.body, "hnag") {
		t.Errorf("got %d %q, want 500 naming the unknown kind", res.status, res.body)
	}
}

func TestHangUntilClientGivesUp(t *testing.T) {
	f := newFixture(t)
	f.e.Script(Fault{Kind: FaultHang})
	client := &http.Client{Transport: f.client.Transport, Timeout: 200 * time.Millisecond}

	_, err := send(client, f.request(t, trigA, tokA, "k1", okBody))

	var netErr net.Error
	if !errors.As(err, &netErr) || !netErr.Timeout() {
		t.Fatalf("error = %v, want a client timeout", err)
	}
	if s := f.e.Stats(); s.Hangs != 1 || s.Faults[FaultHang] != 1 {
		t.Errorf("Stats() = %+v, want one hang", s)
	}
	// The default HangFor is minutes. So finding the request logged means
	// the client's departure ended the hang.
	wait.For(t, waitLong, "the hang to end after the client left", func() bool {
		reqs := f.e.Requests()
		return len(reqs) == 1 && reqs[0].Fault == FaultHang && reqs[0].Status == 0
	})
	if n := f.e.LedgerLen(); n != 0 {
		t.Errorf("LedgerLen() = %d, want 0", n)
	}
}

func TestHangIsBoundedByHangFor(t *testing.T) {
	const hangFor = 150 * time.Millisecond
	f := newFixture(t, WithFaults(Faults{HangRate: 1, HangFor: hangFor}))
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()

	start := time.Now()
	_, err := send(f.client, f.request(t, trigA, tokA, "", okBody).WithContext(ctx))
	elapsed := time.Since(start)

	if err == nil || ctx.Err() != nil {
		t.Fatalf("error = %v (context %v), want the server to close the connection", err, ctx.Err())
	}
	if elapsed < hangFor {
		t.Errorf("connection closed after %v, before HangFor %v", elapsed, hangFor)
	}
	if s := f.e.Stats(); s.Hangs != 1 || len(s.ByStatus) != 0 {
		t.Errorf("Stats() = %+v, want one hang and no response", s)
	}
}

func TestDropAfterAccept(t *testing.T) {
	f := newFixture(t)
	// A fresh connection per request. net/http's Transport silently retries a
	// request that has an Idempotency-Key when a reused connection fails,
	// and that retry would hide the drop.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	f.e.Script(Fault{Kind: FaultDropAfterAccept})

	res, err := send(client, f.request(t, trigA, tokA, "k1", okBody))
	if err == nil {
		t.Fatalf("got status %d, want a network error", res.status)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("error = %v, want a closed connection, not a timeout", err)
	}
	l := f.e.Ledger()
	if len(l) != 1 || !l[0].Dropped || l[0].IdempotencyKey != "k1" {
		t.Fatalf("Ledger() = %+v, want one dropped event for k1", l)
	}

	res, err = send(client, f.request(t, trigA, tokA, "k1", okBody))
	if err != nil || res.status != http.StatusAccepted {
		t.Fatalf("retry: %d, %v; want 202", res.status, err)
	}
	s := f.e.Stats()
	if f.e.LedgerLen() != 1 || s.Replays != 1 || s.Dropped != 1 || s.Accepted != 1 {
		t.Errorf("after retry: ledger %d, Stats() %+v; want 1 event, 1 replay, 1 drop", f.e.LedgerLen(), s)
	}
}

func TestDropAppliesOnlyToAcceptedRequests(t *testing.T) {
	f := newFixture(t)
	if got := f.trigger(t, trigA, tokA, "k1"); got != http.StatusAccepted {
		t.Fatalf("setup: %d", got)
	}

	f.e.Script(Fault{Kind: FaultDropAfterAccept})
	if got := f.trigger(t, trigA, "bad-token", "k2"); got != http.StatusUnauthorized {
		t.Errorf("rejected request under a drop fault: %d, want its normal 401", got)
	}
	f.e.Script(Fault{Kind: FaultDropAfterAccept})
	if got := f.trigger(t, trigA, tokA, "k1"); got != http.StatusAccepted {
		t.Errorf("replay under a drop fault: %d, want its normal 202", got)
	}
	if n := f.e.ScriptLen(); n != 0 {
		t.Errorf("ScriptLen() = %d, want 0: a drop is spent even when not applied", n)
	}
	if got := f.trigger(t, trigA, tokA, "k3"); got != http.StatusAccepted {
		t.Errorf("next request: %d, want 202", got)
	}
	if s := f.e.Stats(); s.Dropped != 0 || s.Faults[FaultDropAfterAccept] != 0 {
		t.Errorf("Stats() = %+v, want no drops", s)
	}
	for _, ev := range f.e.Ledger() {
		if ev.Dropped {
			t.Errorf("event %+v marked dropped", ev)
		}
	}
}

func TestProbabilisticDrop(t *testing.T) {
	f := newFixture(t, WithFaults(Faults{DropRate: 1}))
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 3 {
		if res, err := send(client, f.request(t, trigA, tokA, fmt.Sprint("k", i), okBody)); err == nil {
			t.Errorf("request %d: status %d, want a dropped connection", i, res.status)
		}
	}
	l := f.e.Ledger()
	if len(l) != 3 || !l[0].Dropped || !l[2].Dropped {
		t.Errorf("Ledger() = %+v, want 3 dropped events", l)
	}
}

func TestProbabilisticRatesAreHonoured(t *testing.T) {
	const n = 1000
	f := newFixture(t, WithFaults(Faults{ServerErrorRate: 0.2, RateLimitRate: 0.1, Seed: 42}))
	counts := map[int]int{}
	for i := range n {
		counts[f.trigger(t, trigA, tokA, fmt.Sprint("k", i))]++
	}

	if c := counts[503]; c < 130 || c > 270 {
		t.Errorf("503s = %d of %d at rate 0.2", c, n)
	}
	if c := counts[429]; c < 50 || c > 150 {
		t.Errorf("429s = %d of %d at rate 0.1", c, n)
	}
	if counts[202]+counts[503]+counts[429] != n {
		t.Errorf("unexpected statuses: %v", counts)
	}
	s := f.e.Stats()
	if int(s.Faults[FaultServerError]) != counts[503] || int(s.Faults[FaultRateLimit]) != counts[429] {
		t.Errorf("Stats().Faults = %v, responses %v", s.Faults, counts)
	}
	if f.e.LedgerLen() != counts[202] {
		t.Errorf("LedgerLen() = %d, want %d", f.e.LedgerLen(), counts[202])
	}
}

// TestSeedMakesFaultsReproducible calls ServeHTTP directly: neither 5xx nor
// 429 needs a connection, and a recorder keeps the 3×200 calls fast.
func TestSeedMakesFaultsReproducible(t *testing.T) {
	run := func(seed int64) []int {
		e := New(WithToken(tokA, trigA), WithTrigger(trigA, true),
			WithFaults(Faults{ServerErrorRate: 0.3, RateLimitRate: 0.3, Seed: seed}))
		var out []int
		for range 200 {
			req := httptest.NewRequest(http.MethodPost, "/v1/workspace_agents/"+trigA+"/trigger", strings.NewReader(okBody))
			req.Header.Set("Authorization", "Bearer "+tokA)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			out = append(out, rec.Code)
		}
		return out
	}
	a, b, c := run(7), run(7), run(8)
	if !slices.Equal(a, b) {
		t.Errorf("same seed gave different sequences")
	}
	if slices.Equal(a, c) {
		t.Errorf("different seeds gave the same 200-long sequence")
	}
}

func TestLatencyIsApplied(t *testing.T) {
	const latency = 150 * time.Millisecond
	f := newFixture(t, WithFaults(Faults{Latency: latency, LatencyJitter: 20 * time.Millisecond}))

	start := time.Now()
	got := f.trigger(t, trigA, tokA, "")
	elapsed := time.Since(start)

	if got != http.StatusAccepted {
		t.Fatalf("status %d, want 202", got)
	}
	if elapsed < latency {
		t.Errorf("answered after %v, want at least %v", elapsed, latency)
	}
	if reqs := f.e.Requests(); len(reqs) != 1 || reqs[0].Duration < latency {
		t.Errorf("Requests() = %+v, want one request lasting at least %v", reqs, latency)
	}
}

func TestLatencyIsCancelledByTheClient(t *testing.T) {
	f := newFixture(t, WithFaults(Faults{Latency: time.Hour}))
	client := &http.Client{Transport: f.client.Transport, Timeout: 100 * time.Millisecond}

	if _, err := send(client, f.request(t, trigA, tokA, "", okBody)); err == nil {
		t.Fatal("want a client timeout")
	}
	wait.For(t, waitLong, "the delayed request to be cancelled", func() bool { return f.e.Stats().Canceled == 1 })
	if n := f.e.LedgerLen(); n != 0 {
		t.Errorf("LedgerLen() = %d, want 0", n)
	}
}

// startHang sends one request that hangs and waits until the emulator holds
// it. The returned channel yields the client's error.
func startHang(t *testing.T, f *fixture) <-chan error {
	t.Helper()
	f.e.Script(Fault{Kind: FaultHang})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req := f.request(t, trigA, tokA, "", okBody).WithContext(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := send(f.client, req)
		done <- err
	}()
	wait.For(t, waitLong, "the request to hang", func() bool { return f.e.Stats().Hangs == 1 })
	return done
}

func TestCloseIsPromptWithAHangingRequest(t *testing.T) {
	f := newFixture(t)
	clientDone := startHang(t, f)

	start := time.Now()
	if err := f.srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Close took %v with a hang in flight", elapsed)
	}
	select {
	case err := <-clientDone:
		if err == nil {
			t.Error("hanging client got a response, want a network error")
		}
	case <-time.After(waitLong):
		t.Fatal("hanging client was not released by Close")
	}
	wait.For(t, waitLong, "the hang handler to return", func() bool { return len(f.e.Requests()) == 1 })
}

func TestShutdownWaitsForRequestsInFlight(t *testing.T) {
	f := newFixture(t, WithFaults(Faults{Latency: 300 * time.Millisecond}))
	type outcome struct {
		res result
		err error
	}
	done := make(chan outcome, 1)
	req := f.request(t, trigA, tokA, "", okBody)
	go func() {
		res, err := send(f.client, req)
		done <- outcome{res, err}
	}()
	wait.For(t, waitLong, "the request to arrive", func() bool { return f.e.Stats().Requests == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	o := <-done
	if o.err != nil || o.res.status != http.StatusAccepted {
		t.Errorf("in-flight request: %d, %v; want 202", o.res.status, o.err)
	}
	if _, err := send(f.client, f.request(t, trigA, tokA, "", okBody)); err == nil {
		t.Error("request after Shutdown succeeded")
	}
}

func TestShutdownFallsBackToCloseWhenContextEnds(t *testing.T) {
	f := newFixture(t)
	clientDone := startHang(t, f)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := f.srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Shutdown took %v", elapsed)
	}
	select {
	case err := <-clientDone:
		if err == nil {
			t.Error("hanging client got a response")
		}
	case <-time.After(waitLong):
		t.Fatal("hanging client was not released")
	}
}

func TestListenError(t *testing.T) {
	if _, err := New().Listen("256.0.0.1:0"); err == nil {
		t.Error("Listen on an invalid address succeeded")
	}
}

func TestRequestLog(t *testing.T) {
	f := newFixture(t)
	req := f.request(t, trigA, tokA, "k1", okBody)
	req.Header.Set("User-Agent", "agentrelay-test/1.0")
	f.mustSend(t, req)
	bad := f.request(t, trigA, "", "", okBody)
	bad.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	f.mustSend(t, bad)

	reqs := f.e.Requests()
	if len(reqs) != 2 {
		t.Fatalf("Requests() has %d entries, want 2", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.Path != "/v1/workspace_agents/"+trigA+"/trigger" || r.TriggerID != trigA || r.Status != 202 {
		t.Errorf("entry = %+v", r)
	}
	for h, want := range map[string]string{
		"User-Agent":      "agentrelay-test/1.0",
		"Content-Type":    "application/json",
		"Idempotency-Key": "k1",
		"Authorization":   "Bearer " + Redacted,
	} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("logged %s = %q, want %q", h, got, want)
		}
	}
	if got := reqs[1].Header.Get("Authorization"); got != "Basic "+Redacted {
		t.Errorf("logged wrong-scheme Authorization = %q", got)
	}
	if reqs[1].Status != http.StatusUnauthorized {
		t.Errorf("second entry status %d, want 401", reqs[1].Status)
	}

	// The returned headers are copies.
	reqs[0].Header.Set("User-Agent", "changed")
	if got := f.e.Requests()[0].Header.Get("User-Agent"); got != "agentrelay-test/1.0" {
		t.Errorf("editing a returned header changed the log: %q", got)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"Bearer secret":       "Bearer " + Redacted,
		"bearer secret":       "bearer " + Redacted,
		"Basic dXNlcjpwYXNz":  "Basic " + Redacted,
		"secret":              Redacted,
		"Bearer":              "Bearer",
		"":                    "",
		"s3cr3t! with spaces": Redacted,
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(redact(in), "secret") || strings.Contains(redact(in), "s3cr3t") || strings.Contains(redact(in), "dXNl") {
			t.Errorf("redact(%q) leaks the credential", in)
		}
	}
}

func TestRequestLogIsBounded(t *testing.T) {
	f := newFixture(t, WithRequestLog(3))
	for i := 1; i <= 5; i++ {
		f.trigger(t, trigA, tokA, fmt.Sprint("k", i))
	}
	var keys []string
	for _, r := range f.e.Requests() {
		keys = append(keys, r.Header.Get("Idempotency-Key"))
	}
	if want := []string{"k3", "k4", "k5"}; !slices.Equal(keys, want) {
		t.Errorf("logged keys = %v, want %v", keys, want)
	}

	off := newFixture(t, WithRequestLog(0))
	off.trigger(t, trigA, tokA, "")
	if n := len(off.e.Requests()); n != 0 {
		t.Errorf("disabled log has %d entries", n)
	}
}

func TestReset(t *testing.T) {
	f := newFixture(t)
	f.trigger(t, trigA, tokA, "k1")
	f.e.Script(Fault{Kind: FaultServerError}, Fault{Kind: FaultServerError})
	f.trigger(t, trigA, tokA, "k2")

	f.e.Reset()

	if f.e.LedgerLen() != 0 || f.e.ScriptLen() != 0 || len(f.e.Requests()) != 0 {
		t.Fatalf("after Reset: ledger %d, script %d, log %d; want all 0", f.e.LedgerLen(), f.e.ScriptLen(), len(f.e.Requests()))
	}
	if s := f.e.Stats(); s.Requests != 0 || len(s.ByStatus) != 0 || len(s.Faults) != 0 || s.Accepted != 0 {
		t.Errorf("Stats() after Reset = %+v", s)
	}
	// The idempotency map was cleared too, so k1 is accepted anew.
	if got := f.trigger(t, trigA, tokA, "k1"); got != http.StatusAccepted {
		t.Fatalf("status %d", got)
	}
	if l := f.e.Ledger(); len(l) != 1 || l[0].Seq != 1 || f.e.Stats().Replays != 0 {
		t.Errorf("Ledger() = %+v, want k1 enqueued again as Seq 1", l)
	}
}

func TestWaitLedgerLen(t *testing.T) {
	f := newFixture(t)
	waited := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		waited <- f.e.WaitLedgerLen(ctx, 2)
	}()
	f.trigger(t, trigA, tokA, "")
	f.trigger(t, trigA, tokA, "")
	if err := <-waited; err != nil {
		t.Errorf("WaitLedgerLen: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.e.WaitLedgerLen(ctx, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitLedgerLen beyond the ledger = %v, want DeadlineExceeded", err)
	}
}

func TestValidTriggerID(t *testing.T) {
	for id, want := range map[string]bool{
		"agtch_complaints_123":              true,
		"agtch_A-b_9":                       true,
		"agtch_" + strings.Repeat("x", 128): true,
		"agtch_" + strings.Repeat("x", 129): false,
		"agtch_":                            false,
		"agtch":                             false,
		"Agtch_x":                           false,
		"agtch_x y":                         false,
		"agtch_x/y":                         false,
		"agtch_é":                           false,
		"xagtch_a":                          false,
		"":                                  false,
	} {
		if got := ValidTriggerID(id); got != want {
			t.Errorf("ValidTriggerID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestFaultsValidateAndClamp(t *testing.T) {
	if err := (Faults{ServerErrorRate: 0.5, RateLimitRate: 0.5, Latency: time.Second}).Validate(); err != nil {
		t.Errorf("valid faults: %v", err)
	}
	for name, f := range map[string]Faults{
		"rate above 1":      {HangRate: 1.5},
		"negative rate":     {DropRate: -0.1},
		"sum above 1":       {ServerErrorRate: 0.6, RateLimitRate: 0.6},
		"negative duration": {Latency: -time.Second},
	} {
		if err := f.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}

	e := New(WithFaults(Faults{ServerErrorRate: 2, RateLimitRate: -1, LatencyJitter: -time.Second}))
	got := e.Faults()
	if got.ServerErrorRate != 1 || got.RateLimitRate != 0 || got.LatencyJitter != 0 || got.HangFor != DefaultHangFor {
		t.Errorf("clamped Faults() = %+v", got)
	}
}

// TestConcurrentTrafficAndControl exercises the locks under -race: requests
// race with every control method. The counters must still add up.
func TestConcurrentTrafficAndControl(t *testing.T) {
	f := newFixture(t, WithRequestLog(64))
	const workers, perWorker = 8, 50
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		wg       sync.WaitGroup
	)
	// Requests are built up front because t.Fatal must not run in the
	// workers.
	reqs := make([][]*http.Request, workers)
	for w := range reqs {
		for i := range perWorker {
			reqs[w] = append(reqs[w], f.request(t, trigA, tokA, fmt.Sprintf("w%d-%d", w, i%10), okBody))
		}
	}
	stop := make(chan struct{})
	var ctl sync.WaitGroup
	ctl.Go(func() {
		// The ticker only paces the loop, so the control calls do not starve
		// the requests. The test does not depend on its timing.
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			f.e.SetRunnable(trigA, i%2 == 0)
			f.e.AddToken(fmt.Sprint("tok-", i%16), trigA)
			f.e.SetFaults(Faults{ServerErrorRate: 0.1, LatencyJitter: time.Millisecond})
			if f.e.ScriptLen() < 4 {
				f.e.Script(Fault{Kind: FaultRateLimit, TriggerID: trigA})
			}
			_ = f.e.Stats()
			_ = f.e.Ledger()
			_ = f.e.Requests()
			_ = f.e.Accepted(trigA, "k")
		}
	})
	for w := range workers {
		wg.Go(func() {
			for _, req := range reqs[w] {
				res, err := send(f.client, req)
				if err != nil {
					t.Errorf("transport error: %v", err)
					return
				}
				mu.Lock()
				statuses[res.status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	ctl.Wait()

	for code := range statuses {
		if !slices.Contains([]int{202, 409, 429, 503}, code) {
			t.Errorf("unexpected status %d (%d times)", code, statuses[code])
		}
	}
	s := f.e.Stats()
	if got := int(s.Accepted + s.Replays); got != statuses[202] {
		t.Errorf("accepted %d + replays %d != %d responses of 202", s.Accepted, s.Replays, statuses[202])
	}
	if f.e.LedgerLen() != int(s.Accepted) {
		t.Errorf("LedgerLen() = %d, Stats().Accepted = %d", f.e.LedgerLen(), s.Accepted)
	}
	if s.Requests != workers*perWorker {
		t.Errorf("Stats().Requests = %d, want %d", s.Requests, workers*perWorker)
	}
	for _, ev := range f.e.Ledger() {
		if f.e.Accepted(trigA, ev.IdempotencyKey) != 1 {
			t.Errorf("key %q enqueued more than once", ev.IdempotencyKey)
		}
	}
}

// BenchmarkServeHTTP measures the accept path without the network: auth,
// body parsing, idempotency check and ledger append, each with a fresh key.
func BenchmarkServeHTTP(b *testing.B) {
	for _, logSize := range []int{0, DefaultRequestLogSize} {
		b.Run(fmt.Sprint("requestlog=", logSize), func(b *testing.B) {
			e := New(WithToken(tokA, trigA), WithTrigger(trigA, true), WithRequestLog(logSize))
			body := strings.NewReader(okBody)
			req := httptest.NewRequest(http.MethodPost, "/v1/workspace_agents/"+trigA+"/trigger", body)
			req.Header.Set("Authorization", "Bearer "+tokA)
			req.Header.Set("Content-Type", "application/json")
			keys := make([]string, b.N)
			for i := range keys {
				keys[i] = fmt.Sprint("key-", i)
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				body.Reset(okBody)
				req.Header.Set("Idempotency-Key", keys[i])
				w.Code, w.Body = 0, nil
				e.ServeHTTP(w, req)
			}
			b.StopTimer()
			if e.LedgerLen() != b.N {
				b.Fatalf("LedgerLen() = %d, want %d", e.LedgerLen(), b.N)
			}
		})
	}
}

// referenceParseBody is step 7 written with encoding/json alone: slower, but
// obviously right. FuzzParseBody holds parseBody's scanner to it.
func referenceParseBody(body []byte) (triggerBody, int) {
	var tb triggerBody
	if !utf8.Valid(body) {
		return tb, http.StatusBadRequest
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return tb, http.StatusBadRequest
	}
	var input *string
	if raw, ok := fields["input"]; !ok || json.Unmarshal(raw, &input) != nil || input == nil || *input == "" {
		return tb, http.StatusBadRequest
	}
	tb.input = *input
	if raw, ok := fields["conversation_key"]; ok {
		var key *string
		if json.Unmarshal(raw, &key) != nil {
			return tb, http.StatusBadRequest
		}
		if key != nil {
			tb.conversationKey = *key
		}
	}
	return tb, 0
}

func FuzzParseBody(f *testing.F) {
	for _, seed := range []string{
		okBody,
		`{"input":"x"}`,
		` { "input" : "a\"b\\c" , "conversation_key" : null } `,
		`{"\u0069nput":"escaped name","conversation_key":"k"}`,
		`{"input":"x","input":"last wins"}`,
		`{"input":"x","conversation_key":"a","conversation_key":7}`,
		`{"nested":{"input":"inner"},"input":"outer"}`,
		`{"a":[1,{"b":"}]\"["}],"input":"after nesting"}`,
		`{"input":"\ud83d\ude00 \ud800"}`,
		`{"input":""}`, `{"input":null}`, `{"input":1e3}`, `{"Input":"x"}`,
		`{}`, `[]`, `null`, `"x"`, `{"input":"x"} {}`, `{"input":`, "",
		"{\"input\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, status, _ := parseBody("application/json", body, false, nil)
		want, wantStatus := referenceParseBody(body)
		if status != wantStatus || got != want {
			t.Errorf("parseBody(%q) = %+v, %d; encoding/json says %+v, %d", body, got, status, want, wantStatus)
		}
	})
}
