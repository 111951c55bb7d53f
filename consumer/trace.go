package consumer

import (
	"context"
	"net/url"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/natstrace"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// This file holds the relay's OpenTelemetry tracing: one span per delivery
// of an event (kind consumer), from its arrival through the trigger call to
// its settlement, a child of the producer's span when the message carries
// W3C trace context, and one client span per trigger call under it. With
// tracing off (no TracerProvider, or a no-op one) a runner has no
// routeTracing, and every helper here is a nil check and nothing more: no
// header is read and nothing is allocated.

// tracerName is the instrumentation scope of the relay's spans.
const tracerName = "github.com/agentrelay/agentrelay/consumer"

// routeTracing is a route's tracer and the attributes every span of the
// route has, built once. nil when tracing is off.
type routeTracing struct {
	tracer    trace.Tracer
	name      string // the delivery span's name
	callName  string // the trigger call span's name
	attrs     []attribute.KeyValue
	callAttrs []attribute.KeyValue
	perEvent  bool // the route serves many agents: the trigger id is each event's
}

func newRouteTracing(tp trace.TracerProvider, rt Route) *routeTracing {
	if !natstrace.TracingOn(tp) {
		return nil
	}
	t := &routeTracing{
		tracer: tp.Tracer(tracerName),
		// Messaging conventions: "{operation} {destination}". The route
		// stands for the destination: a subject can hold ids, a route
		// name cannot.
		name:     "process " + rt.Name,
		callName: "POST trigger",
		attrs: []attribute.KeyValue{
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingConsumerGroupName(rt.Durable),
			natstrace.AttrRoute.String(rt.Name),
			natstrace.AttrStream.String(rt.Stream),
		},
		callAttrs: []attribute.KeyValue{semconv.HTTPRequestMethodPost},
	}
	if rt.Agents != nil || rt.Agent == nil {
		// Each event names its agent: startCall and start add its id.
		t.perEvent = true
		return t
	}
	id := natstrace.AttrTriggerID.String(rt.Agent.ID().String())
	t.attrs = append(t.attrs, id)
	t.callAttrs = append(t.callAttrs, id)
	if u, ok := rt.Agent.(interface{ URL() string }); ok {
		if p, err := url.Parse(u.URL()); err == nil {
			t.callAttrs = append(t.callAttrs, semconv.URLFull(p.String()), semconv.ServerAddress(p.Hostname()))
			if port, err := strconv.Atoi(p.Port()); err == nil {
				t.callAttrs = append(t.callAttrs, semconv.ServerPort(port))
			} else if p.Scheme == "https" {
				t.callAttrs = append(t.callAttrs, semconv.ServerPort(443))
			} else {
				t.callAttrs = append(t.callAttrs, semconv.ServerPort(80))
			}
		}
	}
	return t
}

// deliverySpan is the span of one delivery; nil when tracing is off.
type deliverySpan struct {
	ctx  context.Context // parent ctx with the span
	span trace.Span
}

// start begins the span of a delivery, as a child of the trace context the
// message carries (or a new trace without one), under parent (the calls'
// context, which the span's context derives from).
//
// triggerID is the event's trigger id, on a route that serves many agents.
func (t *routeTracing) start(parent context.Context, msg inbound, md *jetstream.MsgMetadata, triggerID string) *deliverySpan {
	if t == nil {
		return nil
	}
	h := msg.Headers()
	ctx := natstrace.Propagator.Extract(parent, natstrace.TraceCarrier(h))
	attrs := make([]attribute.KeyValue, 0, len(t.attrs)+7)
	attrs = append(attrs, t.attrs...)
	if t.perEvent && triggerID != "" {
		attrs = append(attrs, natstrace.AttrTriggerID.String(triggerID))
	}
	attrs = append(attrs,
		semconv.MessagingDestinationName(msg.Subject()),
		semconv.MessagingMessageBodySize(len(msg.Data())),
		natstrace.AttrStreamSequence.Int64(int64(md.Sequence.Stream)),
		natstrace.AttrAttempt.Int64(int64(md.NumDelivered)),
	)
	if id, _ := event.LookupHeader(h, jetstream.MsgIDHeader); id != "" {
		attrs = append(attrs, semconv.MessagingMessageID(id))
	}
	if of, _ := event.LookupHeader(h, deadletter.HeaderReplayOf); of != "" {
		attrs = append(attrs, natstrace.AttrReplayOf.String(of))
	}
	ctx, span := t.tracer.Start(ctx, t.name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	return &deliverySpan{ctx: ctx, span: span}
}

// context returns the context a delivery's calls run under: ctx itself
// when tracing is off, else the span's context (which derives from ctx).
func (s *deliverySpan) context(ctx context.Context) context.Context {
	if s == nil {
		return ctx
	}
	return s.ctx
}

// event notes something that happened to the delivery while it goes on
// (an ordered event retried in place, a dead letter that could not be
// stored).
func (s *deliverySpan) event(name string, out Outcome) {
	if s == nil {
		return
	}
	attrs := []attribute.KeyValue{natstrace.AttrClass.String(string(out.Class))}
	if out.Status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(out.Status))
	}
	if out.Err != nil {
		attrs = append(attrs, semconv.ExceptionMessage(out.Err.Error()))
	}
	s.span.AddEvent(name, trace.WithAttributes(attrs...))
}

// settled ends the span with how the delivery was settled. An error status
// marks every outcome but an acceptance and a hand-back at shutdown
// (class canceled), which is no failure of the event's. Error texts are
// those of the logs: the token is scrubbed from them (agentapi.Error).
func (s *deliverySpan) settled(d *delivery, out Outcome, act Action, settleErr error) {
	if s == nil {
		return
	}
	outcome := act.Verdict.Outcome()
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs,
		natstrace.AttrOutcome.String(outcome),
		natstrace.AttrClass.String(string(out.Class)),
		natstrace.AttrIdempotencyKey.String(d.dec.key),
	)
	if out.Status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(out.Status))
	}
	if d.attempts.Failed > 0 {
		attrs = append(attrs, natstrace.AttrFailures.Int(d.attempts.Failed))
	}
	if out.RouteWide {
		attrs = append(attrs, natstrace.AttrRouteWide.Bool(true))
	}
	switch act.Verdict {
	case verdict.Retry:
		attrs = append(attrs, natstrace.AttrRetryDelay.Float64(act.Delay.Seconds()))
	case verdict.DeadLetter:
		attrs = append(attrs, natstrace.AttrReason.String(string(act.Reason)))
	}
	s.span.SetAttributes(attrs...)
	if act.Verdict != verdict.Ack && out.Class != agentapi.ClassCanceled {
		if out.Err != nil {
			s.span.RecordError(out.Err)
		}
		s.span.SetStatus(codes.Error, outcome+": "+string(out.Class))
	}
	if settleErr != nil {
		s.span.AddEvent("settle failed", trace.WithAttributes(semconv.ExceptionMessage(settleErr.Error())))
	}
	s.span.End()
}

// startCall begins the client span of one trigger call of triggerID under
// ctx (a delivery span's context); it returns ctx and nil when tracing is
// off.
func (t *routeTracing) startCall(ctx context.Context, triggerID string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, nil
	}
	attrs := t.callAttrs
	if t.perEvent && triggerID != "" {
		attrs = append(attrs[:len(attrs):len(attrs)], natstrace.AttrTriggerID.String(triggerID))
	}
	return t.tracer.Start(ctx, t.callName, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endCall ends a trigger call's span.
func endCall(span trace.Span, status int, class agentapi.Class, err error) {
	if span == nil {
		return
	}
	if status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	span.SetAttributes(natstrace.AttrClass.String(string(class)))
	if class != agentapi.ClassAccepted {
		if err != nil {
			span.RecordError(err)
		}
		errType := string(class)
		if status != 0 {
			errType = strconv.Itoa(status)
		}
		span.SetAttributes(semconv.ErrorTypeKey.String(errType))
		span.SetStatus(codes.Error, string(class))
	}
	span.End()
}
