package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

type tracingAgent struct{}

func (tracingAgent) ID() agentapi.TriggerID {
	id, _ := agentapi.ParseTriggerID("agtch_bench")
	return id
}
func (tracingAgent) Trigger(context.Context, agentapi.Event) (int, error) { return 202, nil }

// tracedDelivery runs the tracing steps handle and trigger take for one
// message.
func tracedDelivery(rt *routeTracing, ctx context.Context, msg *pulledMsg, md *jetstream.MsgMetadata) {
	dec := decoded{key: "k"}
	d := delivery{msg: msg, md: md, dec: &dec}
	d.span = rt.start(ctx, msg, md, "")
	cctx, span := rt.startCall(d.span.context(ctx), "")
	_ = cctx
	endCall(span, 202, agentapi.ClassAccepted, nil)
	d.span.settled(&d, Outcome{Class: agentapi.ClassAccepted, Status: 202}, Action{Verdict: verdict.Ack}, nil)
}

func benchMsg() (*pulledMsg, *jetstream.MsgMetadata) {
	msg := &pulledMsg{msg: &nats.Msg{Subject: "events.a", Data: []byte(`{"input":"hi"}`),
		Header: nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}}
	md := &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: 7}, NumDelivered: 1, Stream: "EVENTS", Timestamp: time.Now()}
	return msg, md
}

// With tracing off (no provider, or a no-op one) the tracing steps of a
// delivery allocate nothing.
func TestTracingOffAllocatesNothing(t *testing.T) {
	msg, md := benchMsg()
	rt := Route{Name: "r", Stream: "EVENTS", Agent: tracingAgent{}}.WithDefaults()
	for name, tp := range map[string]*routeTracing{"nil": newRouteTracing(nil, rt), "noop": newRouteTracing(noop.NewTracerProvider(), rt)} {
		if tp != nil {
			t.Fatalf("%s provider: tracing on", name)
		}
		ctx := context.Background()
		if n := testing.AllocsPerRun(100, func() { tracedDelivery(tp, ctx, msg, md) }); n != 0 {
			t.Errorf("%s provider: %v allocations per delivery, want 0", name, n)
		}
	}
}

// BenchmarkTracing is the cost of a delivery's tracing steps: off, and on
// with a sampled span per delivery and per call (no exporter).
func BenchmarkTracing(b *testing.B) {
	msg, md := benchMsg()
	rt := Route{Name: "r", Stream: "EVENTS", Agent: tracingAgent{}}.WithDefaults()
	ctx := context.Background()
	b.Run("off", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tracedDelivery(nil, ctx, msg, md)
		}
	})
	b.Run("on", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider()
		defer func() { _ = tp.Shutdown(ctx) }()
		on := newRouteTracing(tp, rt)
		b.ReportAllocs()
		for b.Loop() {
			tracedDelivery(on, ctx, msg, md)
		}
	})
}
