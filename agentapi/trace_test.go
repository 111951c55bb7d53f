package agentapi_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentrelay/agentrelay/agentapi"
)

// A call made under a span carries the span's W3C trace context, so the
// API's own traces join the caller's; tracestate goes along unchanged.
func TestTriggerSendsTheTraceContextOfTheCallersSpan(t *testing.T) {
	emu, a := emulated(t)
	ts, err := trace.ParseTraceState("vendor=abc")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		TraceState: ts,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if _, err := a.Trigger(ctx, agentapi.Event{Input: "hello", IdempotencyKey: "k-trace-1"}); err != nil {
		t.Fatal(err)
	}
	reqs := emu.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	h := reqs[0].Header
	if got, want := h.Get("traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; got != want {
		t.Errorf("traceparent = %q, want %q", got, want)
	}
	if got := h.Get("tracestate"); got != "vendor=abc" {
		t.Errorf("tracestate = %q, want vendor=abc", got)
	}
	if got := h.Get("baggage"); got != "" {
		t.Errorf("baggage = %q, want none", got)
	}
}

// Without a span context (tracing off) the request has no trace header.
func TestTriggerSendsNoTraceContextWithoutASpan(t *testing.T) {
	emu, a := emulated(t)
	if _, err := a.Trigger(context.Background(), agentapi.Event{Input: "hello", IdempotencyKey: "k-trace-2"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range emu.Requests() {
		for _, name := range []string{"traceparent", "tracestate"} {
			if v := r.Header.Get(name); v != "" {
				t.Errorf("%s = %q sent without a span", name, v)
			}
		}
	}
	if len(emu.Requests()) != 1 {
		t.Fatalf("%d requests, want 1", len(emu.Requests()))
	}
}
