package consumer

import (
	"context"
	"net/url"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
)

// This file holds the relay's OpenTelemetry tracing: one span per delivery
// of an event (kind consumer), from its arrival through the trigger call to
// its settlement, a child of the producer's span when the message carries
// W3C trace context, and one client span per trigger call under it. With
// tracing off (no TracerProvider, or a no-op one) a runner has no
// routeTracing, and every helper here is a nil check and nothing more: no
// header is read and nothing is allocated.

// TracerName is the instrumentation scope of the relay's spans.
const TracerName = "github.com/agentrelay/agentrelay/consumer"

// Span attribute keys of agentrelay's own (the messaging and HTTP ones are
// OpenTelemetry's semantic conventions).
const (
	AttrRoute          = attribute.Key("agentrelay.route")
	AttrTriggerID      = attribute.Key("agentrelay.trigger_id")
	AttrStream         = attribute.Key("agentrelay.stream")
	AttrStreamSequence = attribute.Key("agentrelay.stream_sequence")
	AttrAttempt        = attribute.Key("agentrelay.attempt") // the delivery count, 1 for the first delivery
	AttrIdempotencyKey = attribute.Key("agentrelay.idempotency_key")
	AttrClass          = attribute.Key("agentrelay.class")   // the outcome's class (agentapi.Class)
	AttrOutcome        = attribute.Key("agentrelay.outcome") // acked, retried or dead_lettered
	AttrReason         = attribute.Key("agentrelay.reason")  // the dead-letter reason
	AttrRetryDelay     = attribute.Key("agentrelay.retry_delay_s")
	AttrFailures       = attribute.Key("agentrelay.failures")   // the event's own failures seen by this replica
	AttrRouteWide      = attribute.Key("agentrelay.route_wide") // the outcome is the route's condition, not the event's
	AttrReplayOf       = attribute.Key("agentrelay.replay_of")  // the dead letter a replayed event came from
)

// Outcome values of AttrOutcome; the same words as the metrics use.
const (
	traceAcked        = "acked"
	traceRetried      = "retried"
	traceDeadLettered = "dead_lettered"
)

// Trace context header names, as W3C Trace Context spells them.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// TraceCarrier reads and writes W3C trace context in NATS message headers
// for a propagation.TextMapPropagator. NATS headers are case-sensitive, and
// producers write "traceparent" (the W3C spelling) or "Traceparent" (Go's
// canonical form of an HTTP header): Get finds either, as lookupHeader does,
// and Set replaces every case variant of the name.
type TraceCarrier nats.Header

var _ propagation.TextMapCarrier = TraceCarrier(nil)

// Get returns the first value of key, matched exactly first, then without
// regard to case.
func (c TraceCarrier) Get(key string) string {
	v, _ := lookupHeader(nats.Header(c), key)
	return v
}

// Set sets key to value, dropping the key's case variants.
func (c TraceCarrier) Set(key, value string) {
	for k := range c {
		if k != key && strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[key] = []string{value}
}

// Keys lists the header names.
func (c TraceCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// tracePropagator is how trace context crosses NATS and HTTP: W3C Trace
// Context only. Baggage is not taken from the message: it would reach
// nothing but the trigger API, a third party it is not meant for.
var tracePropagator = propagation.TraceContext{}

// TracingOn reports whether tp records anything: false for nil and for the
// no-op provider, which the relay treats as tracing off.
func TracingOn(tp trace.TracerProvider) bool {
	if tp == nil {
		return false
	}
	switch tp.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return false
	}
	return true
}

// routeTracing is a route's tracer and the attributes every span of the
// route has, built once. nil when tracing is off.
type routeTracing struct {
	tracer    trace.Tracer
	name      string // the delivery span's name
	callName  string // the trigger call span's name
	attrs     []attribute.KeyValue
	callAttrs []attribute.KeyValue
}

func newRouteTracing(tp trace.TracerProvider, rt Route) *routeTracing {
	if !TracingOn(tp) {
		return nil
	}
	id := rt.Agent.ID().String()
	t := &routeTracing{
		tracer: tp.Tracer(TracerName),
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
			AttrRoute.String(rt.Name),
			AttrTriggerID.String(id),
			AttrStream.String(rt.Stream),
		},
		callAttrs: []attribute.KeyValue{semconv.HTTPRequestMethodPost, AttrTriggerID.String(id)},
	}
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
func (t *routeTracing) start(parent context.Context, msg inbound, md *jetstream.MsgMetadata) *deliverySpan {
	if t == nil {
		return nil
	}
	h := msg.Headers()
	ctx := tracePropagator.Extract(parent, TraceCarrier(h))
	attrs := make([]attribute.KeyValue, 0, len(t.attrs)+6)
	attrs = append(attrs, t.attrs...)
	attrs = append(attrs,
		semconv.MessagingDestinationName(msg.Subject()),
		semconv.MessagingMessageBodySize(len(msg.Data())),
		AttrStreamSequence.Int64(int64(md.Sequence.Stream)),
		AttrAttempt.Int64(int64(md.NumDelivered)),
	)
	if id, _ := lookupHeader(h, jetstream.MsgIDHeader); id != "" {
		attrs = append(attrs, semconv.MessagingMessageID(id))
	}
	if of, _ := lookupHeader(h, deadletter.HeaderReplayOf); of != "" {
		attrs = append(attrs, AttrReplayOf.String(of))
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
	attrs := []attribute.KeyValue{AttrClass.String(string(out.Class))}
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
func (s *deliverySpan) settled(d delivery, out Outcome, act Action, settleErr error) {
	if s == nil {
		return
	}
	outcome := traceRetried
	switch act.Verdict {
	case VerdictAck:
		outcome = traceAcked
	case VerdictDeadLetter:
		outcome = traceDeadLettered
	}
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs,
		AttrOutcome.String(outcome),
		AttrClass.String(string(out.Class)),
		AttrIdempotencyKey.String(d.key),
	)
	if out.Status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(out.Status))
	}
	if d.attempts.Failed > 0 {
		attrs = append(attrs, AttrFailures.Int(d.attempts.Failed))
	}
	if out.RouteWide {
		attrs = append(attrs, AttrRouteWide.Bool(true))
	}
	switch act.Verdict {
	case VerdictRetry:
		attrs = append(attrs, AttrRetryDelay.Float64(act.Delay.Seconds()))
	case VerdictDeadLetter:
		attrs = append(attrs, AttrReason.String(string(act.Reason)))
	}
	s.span.SetAttributes(attrs...)
	if outcome != traceAcked && out.Class != agentapi.ClassCanceled {
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

// startCall begins the client span of one trigger call under ctx (a
// delivery span's context); it returns ctx and nil when tracing is off.
func (t *routeTracing) startCall(ctx context.Context) (context.Context, trace.Span) {
	if t == nil {
		return ctx, nil
	}
	return t.tracer.Start(ctx, t.callName, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(t.callAttrs...))
}

// endCall ends a trigger call's span.
func endCall(span trace.Span, status int, class agentapi.Class, err error) {
	if span == nil {
		return
	}
	if status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	span.SetAttributes(AttrClass.String(string(class)))
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
