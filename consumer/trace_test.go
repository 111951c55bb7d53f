package consumer_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/natstrace"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// The producer's span, as a traceparent header would carry it.
var (
	producerTrace = trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	producerSpan  = trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
)

const producerTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// traced returns an SDK tracer provider that keeps every span in memory.
func traced(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// spansNamed waits for n ended spans called name and returns them, oldest
// first.
func spansNamed(t *testing.T, exp *tracetest.InMemoryExporter, name string, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	var got []sdktrace.ReadOnlySpan
	testenv.Eventually(t, 10*time.Second, "spans "+name, func() bool {
		got = got[:0]
		for _, s := range exp.GetSpans().Snapshots() {
			if s.Name() == name {
				got = append(got, s)
			}
		}
		return len(got) >= n
	})
	if len(got) != n {
		t.Fatalf("%d spans %q, want %d", len(got), name, n)
	}
	slices.SortFunc(got, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
	return got
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// wantAttrs checks attributes by their printed values.
func wantAttrs(t *testing.T, s sdktrace.ReadOnlySpan, want map[string]string) {
	t.Helper()
	got := attrs(s)
	for k, v := range want {
		if g, ok := got[attribute.Key(k)]; !ok || g.String() != v {
			t.Errorf("span %s: %s = %q (set: %v), want %q", s.Name(), k, g.String(), ok, v)
		}
	}
}

// childOf returns the spans whose parent is span.
func childOf(exp *tracetest.InMemoryExporter, parent trace.SpanID) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range exp.GetSpans().Snapshots() {
		if s.Parent().SpanID() == parent {
			out = append(out, s)
		}
	}
	return out
}

// An event published with a traceparent gets a consumer span that is a
// child of the producer's span and says what happened to the event; the
// trigger call is a client span under it, and the API receives that span
// as its parent, in the producer's trace.
func TestTracingDeliverySpanContinuesTheProducersTrace(t *testing.T) {
	h := newHarness(t, emulator.WithTrigger("agtch_trace", true))
	tp, exp := traced(t)
	h.startWith(func(o *consumer.Options) { o.TracerProvider = tp }, h.route("r1", "events.r1.>", h.agent("agtch_trace")))

	ack := h.publish("events.r1.a", `{"input":"hi"}`, nats.Header{"traceparent": {producerTraceparent}, "tracestate": {"vendor=abc"}}, "ev-trace-1")
	h.waitSettled(10*time.Second, "r1")

	d := spansNamed(t, exp, "process r1", 1)[0]
	if d.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("kind %v, want consumer", d.SpanKind())
	}
	if d.SpanContext().TraceID() != producerTrace || d.Parent().SpanID() != producerSpan || !d.Parent().IsRemote() {
		t.Errorf("span %s has parent %s in trace %s; want the producer's span %s in trace %s",
			d.SpanContext().SpanID(), d.Parent().SpanID(), d.SpanContext().TraceID(), producerSpan, producerTrace)
	}
	if got := d.SpanContext().TraceState().String(); got != "vendor=abc" {
		t.Errorf("tracestate %q, want vendor=abc", got)
	}
	wantAttrs(t, d, map[string]string{
		"messaging.system":              "nats",
		"messaging.operation.type":      "process",
		"messaging.destination.name":    "events.r1.a",
		"messaging.message.id":          "ev-trace-1",
		"messaging.consumer.group.name": "agentrelay-r1",
		"agentrelay.route":              "r1",
		"agentrelay.trigger_id":         "agtch_trace",
		"agentrelay.stream":             stream,
		"agentrelay.stream_sequence":    itoa(ack.Sequence),
		"agentrelay.attempt":            "1",
		"agentrelay.idempotency_key":    "ev-trace-1",
		"agentrelay.class":              "accepted",
		"agentrelay.outcome":            "acked",
		"http.response.status_code":     "202",
		"messaging.message.body.size":   "14",
	})
	if d.Status().Code == codes.Error {
		t.Errorf("accepted event's span has status %v", d.Status())
	}

	calls := childOf(exp, d.SpanContext().SpanID())
	if len(calls) != 1 || calls[0].SpanKind() != trace.SpanKindClient {
		t.Fatalf("%d child spans of the delivery, want one client span", len(calls))
	}
	call := calls[0]
	wantAttrs(t, call, map[string]string{"http.request.method": "POST", "http.response.status_code": "202", "server.address": "127.0.0.1"})

	reqs := h.emu.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d API requests, want 1", len(reqs))
	}
	want := "00-" + producerTrace.String() + "-" + call.SpanContext().SpanID().String() + "-01"
	if got := reqs[0].Header.Get("traceparent"); got != want {
		t.Errorf("the API got traceparent %q, want %q (the call's span in the producer's trace)", got, want)
	}
	if got := reqs[0].Header.Get("tracestate"); got != "vendor=abc" {
		t.Errorf("the API got tracestate %q, want vendor=abc", got)
	}
}

// Each delivery attempt of an event has its own span in the producer's
// trace: a 503 and then a 202 give two spans, attempts 1 and 2, retried
// (an error) and then acked. No span holds the token.
func TestTracingRetriesAreSpansOfTheSameTrace(t *testing.T) {
	h := newHarness(t, emulator.WithTrigger("agtch_trace", true))
	h.emu.Script(emulator.Fault{Kind: emulator.FaultServerError, Status: 503})
	tp, exp := traced(t)
	h.startWith(func(o *consumer.Options) { o.TracerProvider = tp }, h.route("r1", "events.r1.>", h.agent("agtch_trace")))

	h.publish("events.r1.a", `{"input":"hi"}`, nats.Header{"Traceparent": {producerTraceparent}}, "ev-trace-2")
	h.waitSettled(10*time.Second, "r1")

	spans := spansNamed(t, exp, "process r1", 2)
	for i, want := range []struct{ attempt, outcome, class, status string }{
		{"1", "retried", "server_error", "503"},
		{"2", "acked", "accepted", "202"},
	} {
		s := spans[i]
		if s.SpanContext().TraceID() != producerTrace || s.Parent().SpanID() != producerSpan {
			t.Errorf("attempt %s: span in trace %s under %s, want the producer's span", want.attempt, s.SpanContext().TraceID(), s.Parent().SpanID())
		}
		wantAttrs(t, s, map[string]string{
			"agentrelay.attempt": want.attempt, "agentrelay.outcome": want.outcome,
			"agentrelay.class": want.class, "http.response.status_code": want.status,
			"agentrelay.idempotency_key": "ev-trace-2",
		})
	}
	if c := spans[0].Status().Code; c != codes.Error {
		t.Errorf("retried attempt's status %v, want Error", c)
	}
	if _, ok := attrs(spans[0])["agentrelay.retry_delay_s"]; !ok {
		t.Error("retried attempt's span has no retry delay")
	}
	for _, s := range exp.GetSpans().Snapshots() {
		for _, kv := range s.Attributes() {
			if strings.Contains(kv.Value.String(), tok) {
				t.Errorf("span %s attribute %s holds the token", s.Name(), kv.Key)
			}
		}
		for _, ev := range s.Events() {
			for _, kv := range ev.Attributes {
				if strings.Contains(kv.Value.String(), tok) {
					t.Errorf("span %s event %s holds the token", s.Name(), ev.Name)
				}
			}
		}
	}
}

// A dead letter keeps the event's trace context, and its replay's
// delivery is in the producer's trace: under the replay's own span when the
// replay is traced, under the producer's span when it is not.
func TestTracingDeadLetterAndReplayStayInTheOriginalTrace(t *testing.T) {
	for _, tracedReplay := range []bool{true, false} {
		name := map[bool]string{true: "traced replay", false: "untraced replay"}[tracedReplay]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, emulator.WithTrigger("agtch_trace", true))
			h.emu.Script(emulator.Fault{Kind: emulator.FaultServerError, Status: 403})
			tp, exp := traced(t)
			h.startWith(func(o *consumer.Options) { o.TracerProvider = tp }, h.route("r1", "events.r1.>", h.agent("agtch_trace")))

			h.publish("events.r1.a", `{"input":"hi"}`, nats.Header{"traceparent": {producerTraceparent}}, "ev-trace-3")
			h.waitSettled(10*time.Second, "r1")
			first := spansNamed(t, exp, "process r1", 1)[0]
			wantAttrs(t, first, map[string]string{"agentrelay.outcome": "dead_lettered", "agentrelay.reason": "forbidden", "http.response.status_code": "403"})
			if first.Status().Code != codes.Error {
				t.Errorf("dead-lettered attempt's status %v, want Error", first.Status())
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			store, err := dlq.Open(ctx, h.nats.JS, deadletter.Config{})
			if err != nil {
				t.Fatal(err)
			}
			letter := h.deadLetterBy("ev-trace-3")
			if letter == nil {
				t.Fatal("no dead letter")
			}
			if got := letter.Header.Get("traceparent"); got != producerTraceparent {
				t.Fatalf("the dead letter's traceparent is %q, want the original's %q", got, producerTraceparent)
			}
			l, err := store.Get(ctx, letter.Sequence)
			if err != nil {
				t.Fatal(err)
			}
			policy := dlq.Policy{Routes: []dlq.Route{{Name: "r1", Stream: stream, TriggerID: "agtch_trace", Filters: []string{"events.r1.>"}}}}
			var replayTP trace.TracerProvider
			if tracedReplay {
				replayTP = tp
			}
			rctx, span := store.TraceReplay(ctx, replayTP, l)
			ack, err := store.Replay(rctx, policy, l, false)
			dlq.EndReplay(span, ack, err)
			if err != nil {
				t.Fatal(err)
			}
			h.mu.Lock()
			h.published = append(h.published, published{"events.r1.a", ack.Sequence})
			h.mu.Unlock()
			h.waitSettled(10*time.Second, "r1")

			replayed := spansNamed(t, exp, "process r1", 2)[1]
			wantAttrs(t, replayed, map[string]string{"agentrelay.outcome": "acked", "agentrelay.idempotency_key": "ev-trace-3"})
			if _, ok := attrs(replayed)["agentrelay.replay_of"]; !ok {
				t.Error("the replayed delivery's span does not say it is a replay")
			}
			if replayed.SpanContext().TraceID() != producerTrace {
				t.Fatalf("the replayed delivery is in trace %s, want the original %s", replayed.SpanContext().TraceID(), producerTrace)
			}
			wantParent := producerSpan
			if tracedReplay {
				rs := spansNamed(t, exp, "replay r1", 1)[0]
				if rs.SpanKind() != trace.SpanKindProducer || rs.Parent().SpanID() != producerSpan || rs.SpanContext().TraceID() != producerTrace {
					t.Errorf("replay span: kind %v, parent %s in trace %s; want a producer span under the producer's", rs.SpanKind(), rs.Parent().SpanID(), rs.SpanContext().TraceID())
				}
				wantAttrs(t, rs, map[string]string{"agentrelay.reason": "forbidden", "messaging.destination.name": "events.r1.a"})
				wantParent = rs.SpanContext().SpanID()
			}
			if replayed.Parent().SpanID() != wantParent {
				t.Errorf("the replayed delivery's parent is %s, want %s", replayed.Parent().SpanID(), wantParent)
			}
		})
	}
}

// With tracing off (no provider, or a no-op one) the API gets no trace
// header, even for a message that carries one: nothing is extracted.
func TestTracingOffSendsNoTraceHeader(t *testing.T) {
	for name, tp := range map[string]trace.TracerProvider{"nil": nil, "noop": noop.NewTracerProvider()} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, emulator.WithTrigger("agtch_trace", true))
			h.startWith(func(o *consumer.Options) { o.TracerProvider = tp }, h.route("r1", "events.r1.>", h.agent("agtch_trace")))
			h.publish("events.r1.a", `{"input":"hi"}`, nats.Header{"traceparent": {producerTraceparent}}, "ev-trace-4")
			h.waitSettled(10*time.Second, "r1")
			reqs := h.emu.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d API requests, want 1", len(reqs))
			}
			for _, k := range []string{"traceparent", "tracestate"} {
				if v := reqs[0].Header.Get(k); v != "" {
					t.Errorf("tracing off, yet the API got %s: %q", k, v)
				}
			}
		})
	}
}

// natstrace.TraceCarrier finds the trace context however the producer spelt the
// header, and replaces every spelling when it writes.
func TestTraceCarrierIgnoresCase(t *testing.T) {
	h := nats.Header{"Traceparent": {"a"}}
	c := natstrace.TraceCarrier(h)
	if got := c.Get("traceparent"); got != "a" {
		t.Errorf("Get = %q, want a", got)
	}
	c.Set("traceparent", "b")
	if len(h) != 1 || h.Get("traceparent") != "b" {
		t.Errorf("after Set: %v, want only traceparent: b", h)
	}
}

func itoa(n uint64) string { return attribute.Int64Value(int64(n)).String() }
