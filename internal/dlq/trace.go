package dlq

import (
	"context"

	"github.com/agentrelay/agentrelay/internal/natstrace"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// A dead letter keeps the original message's traceparent and tracestate
// (its headers are copied), and so does its replay: the replayed event's
// delivery joins the trace the producer started, however long after. When
// the replay itself is traced (TraceReplay), its span is a child of that
// trace too, and the replay carries the replay span's context instead, so
// the trace reads producer → deliveries → replay → delivery.

// TracerName is the instrumentation scope of the replay spans.
const TracerName = "github.com/agentrelay/agentrelay/internal/dlq"

// TraceReplay starts the span of l's replay (kind producer): a child of the
// trace context l keeps from the original message, or a new trace without
// one. Replay, given the returned context, writes the span's context into
// the replayed message. With tracing off (tp nil or no-op) it returns ctx
// and a span that records nothing; the replay then keeps the letter's own
// trace context.
func (s *Store) TraceReplay(ctx context.Context, tp trace.TracerProvider, l Letter) (context.Context, trace.Span) {
	if !natstrace.TracingOn(tp) {
		return ctx, noop.Span{}
	}
	parent := propagation.TraceContext{}.Extract(ctx, natstrace.TraceCarrier(l.Header))
	return tp.Tracer(TracerName).Start(parent, "replay "+l.Route,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("replay"),
			semconv.MessagingDestinationName(l.OrigSubject),
			natstrace.AttrRoute.String(l.Route),
			natstrace.AttrTriggerID.String(l.TriggerID),
			natstrace.AttrReason.String(l.Reason),
			natstrace.AttrStream.String(l.Stream),
			natstrace.AttrStreamSequence.Int64(int64(l.StreamSeq)),
			natstrace.AttrIdempotencyKey.String(l.IdempotencyKey),
			natstrace.AttrAttempt.Int(l.TotalAttempts()),
			natstrace.AttrReplayOf.String(l.ID(s.cfg.Stream).String()),
		))
}

// EndReplay ends a replay's span with what the replay did.
func EndReplay(span trace.Span, ack *jetstream.PubAck, err error) {
	if ack != nil {
		span.SetAttributes(
			natstrace.AttrStream.String(ack.Stream),
			natstrace.AttrStreamSequence.Int64(int64(ack.Sequence)))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "not replayed")
	}
	span.End()
}

// injectTrace writes the span context of ctx, if it has a valid one, into
// h as traceparent and tracestate (replacing those the letter kept).
func injectTrace(ctx context.Context, h nats.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagation.TraceContext{}.Inject(ctx, natstrace.TraceCarrier(h))
}
