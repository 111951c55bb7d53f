package agentapi_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/agentapi"
)

// Micro-benchmarks of the trigger client's per-call path. Run with
//
//	go test -run '^$' -bench . -benchmem ./agentapi/

var benchEvent = agentapi.Event{
	Input:           "Summarise ticket 4711: the customer reports that exports of the quarterly report time out after two minutes and asks for a workaround.",
	ConversationKey: "conv-711",
	IdempotencyKey:  "01HZX3V7K9Q2M4N6P8R0S2T4V6",
}

func BenchmarkValidate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := benchEvent.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

// accept202 answers every request with 202 and no body, without a network:
// what is left is the client's own cost of building, sending and reading a
// call.
type accept202 struct{ resp http.Response }

func (a *accept202) RoundTrip(req *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, req.Body)
	_ = req.Body.Close()
	r := a.resp
	r.Body = http.NoBody
	r.Request = req
	return &r, nil
}

func BenchmarkTrigger(b *testing.B) {
	c, err := agentapi.NewClient("https://api.example.test", agentapi.ClientOptions{
		Transport: &accept202{resp: http.Response{StatusCode: 202, Status: "202 Accepted", Header: http.Header{}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	id, _ := agentapi.ParseTriggerID("agtch_bench")
	a, err := c.Agent(id, agentapi.StaticToken(agentapi.NewSecret("tok-"+strings.Repeat("x", 40))))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Issue #13: the client bypass (RoundTrip from a template request)
	// against http.Client.Do, with the template and with a request built
	// by http.NewRequestWithContext on every call.
	for _, bc := range []struct {
		name    string
		trigger func(context.Context, agentapi.Event) (int, error)
	}{
		{"bypass", a.Trigger},
		{"client-do-template", func(ctx context.Context, ev agentapi.Event) (int, error) { return a.TriggerViaClientDo(ctx, ev, true) }},
		{"client-do-newrequest", func(ctx context.Context, ev agentapi.Event) (int, error) { return a.TriggerViaClientDo(ctx, ev, false) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if status, err := bc.trigger(ctx, benchEvent); status != 202 || err != nil {
					b.Fatal(status, err)
				}
			}
		})
	}
}

// BenchmarkBody is the request body as Trigger makes it (json.Marshal; a
// hand-written encoder saved ~0.3 µs of it, BENCHMARKS.md 2026-11-30).
func BenchmarkBody(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if bodySink, err = benchEvent.Body(); err != nil {
			b.Fatal(err)
		}
	}
}

var bodySink []byte
