// Package natstrace carries W3C trace context in NATS message headers, and
// names the span attributes agentrelay's spans carry, for the worker, the
// dead-letter tools and the CLI alike.
package natstrace

import (
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agentrelay/agentrelay/internal/event"
)

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

// Trace context header names, as W3C Trace Context spells them.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// TraceCarrier reads and writes W3C trace context in NATS message headers
// for a propagation.TextMapPropagator. NATS headers are case-sensitive, and
// producers write "traceparent" (the W3C spelling) or "Traceparent" (Go's
// canonical form of an HTTP header): Get finds either, as event.LookupHeader does,
// and Set replaces every case variant of the name.
type TraceCarrier nats.Header

var _ propagation.TextMapCarrier = TraceCarrier(nil)

// Get returns the first value of key, matched exactly first, then without
// regard to case.
func (c TraceCarrier) Get(key string) string {
	v, _ := event.LookupHeader(nats.Header(c), key)
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

// Propagator is how trace context crosses NATS and HTTP: W3C Trace
// Context only. Baggage is not taken from the message: it would reach
// nothing but the trigger API, a third party it is not meant for.
var Propagator = propagation.TraceContext{}

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
