package otlphttp

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// decodeRequest reads an ExportTraceServiceRequest with the generated
// OTLP types: its only field, 1, is repeated ResourceSpans.
func decodeRequest(t *testing.T, b []byte) []*tracepb.ResourceSpans {
	t.Helper()
	var out []*tracepb.ResourceSpans
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 || tag != 1<<3|2 {
			t.Fatalf("request: unexpected tag %#x", tag)
		}
		b = b[n:]
		l, n := binary.Uvarint(b)
		if n <= 0 || int(l) > len(b)-n {
			t.Fatal("request: bad length")
		}
		rs := &tracepb.ResourceSpans{}
		if err := proto.Unmarshal(b[n:n+int(l)], rs); err != nil {
			t.Fatalf("ResourceSpans: %v", err)
		}
		out = append(out, rs)
		b = b[n+int(l):]
	}
	return out
}

var (
	tid    = trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	sid    = trace.SpanID{1, 1, 1, 1, 1, 1, 1, 1}
	psid   = trace.SpanID{2, 2, 2, 2, 2, 2, 2, 2}
	lsid   = trace.SpanID{3, 3, 3, 3, 3, 3, 3, 3}
	ts, _  = trace.ParseTraceState("vendor=abc")
	t0     = time.Unix(1700000000, 123456789)
	allVal = []attribute.KeyValue{
		attribute.Bool("b", true),
		attribute.Bool("b0", false),
		attribute.Int64("i", -42),
		attribute.Int64("i0", 0),
		attribute.Float64("f", 1.5),
		attribute.String("s", "text"),
		attribute.String("s0", ""),
		attribute.BoolSlice("bs", []bool{true, false}),
		attribute.Int64Slice("is", []int64{1, -2}),
		attribute.Float64Slice("fs", []float64{0.25, math.Inf(1)}),
		attribute.StringSlice("ss", []string{"a", ""}),
	}
)

func stub(name string, res *resource.Resource, scope instrumentation.Scope) tracetest.SpanStub {
	return tracetest.SpanStub{
		Name: name,
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts,
		}),
		Parent:    trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: psid, Remote: true}),
		SpanKind:  trace.SpanKindConsumer,
		StartTime: t0,
		EndTime:   t0.Add(1500 * time.Millisecond),
		Attributes: append([]attribute.KeyValue{
			attribute.String("messaging.system", "nats"),
		}, allVal...),
		Events: []sdktrace.Event{{Name: "retry", Time: t0.Add(time.Second), Attributes: []attribute.KeyValue{attribute.Int("attempt", 2)}, DroppedAttributeCount: 1}},
		Links: []sdktrace.Link{{
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: lsid, Remote: true, TraceState: ts}),
			Attributes:  []attribute.KeyValue{attribute.String("link", "x")},
		}},
		Status:               sdktrace.Status{Code: codes.Error, Description: "409 not runnable"},
		DroppedAttributes:    3,
		DroppedEvents:        4,
		DroppedLinks:         5,
		Resource:             res,
		InstrumentationScope: scope,
		ChildSpanCount:       0,
	}
}

func anyOf(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.Values {
			out = append(out, anyOf(e))
		}
		return out
	}
	return nil
}

// Every field the SDK gives a span arrives, decoded by the generated OTLP
// types: ids, trace state, parent, kind, times, attributes of every type
// (zero values included: they are oneof members), events, links, status,
// dropped counts and flags; spans grouped by resource, then by scope.
func TestMarshalIsOTLPAsTheGeneratedTypesReadIt(t *testing.T) {
	resA := resource.NewSchemaless(attribute.String("service.name", "agentrelay"))
	resB := resource.NewSchemaless(attribute.String("service.name", "other"))
	scope1 := instrumentation.Scope{Name: "agentrelay/consumer", Version: "1.2.3", SchemaURL: "https://opentelemetry.io/schemas/1.26.0"}
	scope2 := instrumentation.Scope{Name: "agentrelay/cli"}
	spans := tracetest.SpanStubs{
		stub("deliver", resA, scope1), stub("deliver-2", resA, scope1), stub("cli", resA, scope2), stub("elsewhere", resB, scope1),
	}.Snapshots()
	got := decodeRequest(t, Marshal(spans))

	if len(got) != 2 {
		t.Fatalf("%d ResourceSpans, want 2 (one per resource)", len(got))
	}
	if a := got[0].GetResource().GetAttributes(); len(a) != 1 || a[0].GetKey() != "service.name" || a[0].GetValue().GetStringValue() != "agentrelay" {
		t.Errorf("resource attributes %v", a)
	}
	if n := len(got[0].GetScopeSpans()); n != 2 {
		t.Fatalf("first resource has %d ScopeSpans, want 2", n)
	}
	ss := got[0].GetScopeSpans()[0]
	if ss.GetScope().GetName() != scope1.Name || ss.GetScope().GetVersion() != scope1.Version || ss.GetSchemaUrl() != scope1.SchemaURL {
		t.Errorf("scope %v schema %q", ss.GetScope(), ss.GetSchemaUrl())
	}
	if len(ss.GetSpans()) != 2 || ss.GetSpans()[1].GetName() != "deliver-2" {
		t.Fatalf("first scope's spans: %v", ss.GetSpans())
	}
	if got[1].GetScopeSpans()[0].GetSpans()[0].GetName() != "elsewhere" {
		t.Error("the second resource's span is not there")
	}

	s := ss.GetSpans()[0]
	checks := []struct {
		what      string
		got, want any
	}{
		{"trace id", string(s.GetTraceId()), string(tid[:])},
		{"span id", string(s.GetSpanId()), string(sid[:])},
		{"parent span id", string(s.GetParentSpanId()), string(psid[:])},
		{"trace state", s.GetTraceState(), "vendor=abc"},
		{"name", s.GetName(), "deliver"},
		{"kind", s.GetKind(), tracepb.Span_SPAN_KIND_CONSUMER},
		{"start", s.GetStartTimeUnixNano(), uint64(t0.UnixNano())},
		{"end", s.GetEndTimeUnixNano(), uint64(t0.Add(1500 * time.Millisecond).UnixNano())},
		{"dropped attributes", s.GetDroppedAttributesCount(), uint32(3)},
		{"dropped events", s.GetDroppedEventsCount(), uint32(4)},
		{"dropped links", s.GetDroppedLinksCount(), uint32(5)},
		{"status code", s.GetStatus().GetCode(), tracepb.Status_STATUS_CODE_ERROR},
		{"status message", s.GetStatus().GetMessage(), "409 not runnable"},
		{"flags", s.GetFlags(), uint32(trace.FlagsSampled) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)},
		{"events", len(s.GetEvents()), 1},
		{"event name", s.GetEvents()[0].GetName(), "retry"},
		{"event time", s.GetEvents()[0].GetTimeUnixNano(), uint64(t0.Add(time.Second).UnixNano())},
		{"event attribute", s.GetEvents()[0].GetAttributes()[0].GetValue().GetIntValue(), int64(2)},
		{"event dropped attributes", s.GetEvents()[0].GetDroppedAttributesCount(), uint32(1)},
		{"links", len(s.GetLinks()), 1},
		{"link span id", string(s.GetLinks()[0].GetSpanId()), string(lsid[:])},
		{"link trace state", s.GetLinks()[0].GetTraceState(), "vendor=abc"},
		{"link attribute", s.GetLinks()[0].GetAttributes()[0].GetValue().GetStringValue(), "x"},
		{"link flags", s.GetLinks()[0].GetFlags(), uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}

	attrs := map[string]*commonpb.AnyValue{}
	for _, kv := range s.GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue()
	}
	for _, kv := range allVal {
		v, ok := attrs[string(kv.Key)]
		if !ok || v.GetValue() == nil {
			t.Errorf("attribute %s missing or without a value", kv.Key)
			continue
		}
		want := kv.Value.AsInterface()
		switch w := want.(type) {
		case []bool, []int64, []float64, []string:
			gotArr, _ := anyOf(v).([]any)
			wantArr := sliceOf(w)
			if len(gotArr) != len(wantArr) {
				t.Errorf("attribute %s = %v, want %v", kv.Key, gotArr, wantArr)
				continue
			}
			for i := range wantArr {
				if gotArr[i] != wantArr[i] {
					t.Errorf("attribute %s[%d] = %v, want %v", kv.Key, i, gotArr[i], wantArr[i])
				}
			}
		default:
			if anyOf(v) != want {
				t.Errorf("attribute %s = %v, want %v", kv.Key, anyOf(v), want)
			}
		}
	}
}

func sliceOf(v any) []any {
	var out []any
	switch w := v.(type) {
	case []bool:
		for _, x := range w {
			out = append(out, x)
		}
	case []int64:
		for _, x := range w {
			out = append(out, x)
		}
	case []float64:
		for _, x := range w {
			out = append(out, x)
		}
	case []string:
		for _, x := range w {
			out = append(out, x)
		}
	}
	return out
}

// A span with nothing optional set encodes an OK status, an unset one
// and no parent as the generated types expect.
func TestMarshalMinimalSpans(t *testing.T) {
	plain := tracetest.SpanStub{
		Name:        "plain",
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}),
		Status:      sdktrace.Status{Code: codes.Ok},
	}
	unset := plain
	unset.Status = sdktrace.Status{}
	got := decodeRequest(t, Marshal(tracetest.SpanStubs{plain, unset}.Snapshots()))
	spans := got[0].GetScopeSpans()[0].GetSpans()
	if got[0].GetScopeSpans()[0].GetScope() != nil {
		t.Error("an empty scope was written")
	}
	if spans[0].GetStatus().GetCode() != tracepb.Status_STATUS_CODE_OK || spans[1].GetStatus().GetCode() != tracepb.Status_STATUS_CODE_UNSET {
		t.Errorf("status codes %v, %v", spans[0].GetStatus(), spans[1].GetStatus())
	}
	if len(spans[0].GetParentSpanId()) != 0 || spans[0].GetKind() != tracepb.Span_SPAN_KIND_UNSPECIFIED {
		t.Errorf("parent %x kind %v, want none", spans[0].GetParentSpanId(), spans[0].GetKind())
	}
	if spans[0].GetFlags() != uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK) {
		t.Errorf("flags %#x", spans[0].GetFlags())
	}
	if len(Marshal(nil)) != 0 {
		t.Error("no spans should be an empty request")
	}
}
