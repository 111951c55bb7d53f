package otlphttp

import (
	"encoding/binary"
	"math"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// The OTLP protobuf messages are written by hand, field by field, from
// opentelemetry-proto's trace.proto, common.proto and resource.proto
// (v1; the field numbers are the wire format, stable since 1.0). The
// generated Go types would bring the protobuf runtime's registry of every
// OTLP message, and the exporter that uses them the gRPC stack: ~6 MB of
// binary for a request of five message kinds (see BENCHMARKS.md). The
// tests decode what this writes with the generated types.

// Wire types.
const (
	wtVarint  = 0
	wtFixed64 = 1
	wtBytes   = 2
	wtFixed32 = 5
)

func appendTag(b []byte, field, wt int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wt))
}

func appendVarint(b []byte, field int, v uint64) []byte {
	return binary.AppendUvarint(appendTag(b, field, wtVarint), v)
}

// appendUint is a proto3 scalar: left out when zero.
func appendUint(b []byte, field int, v uint64) []byte {
	if v == 0 {
		return b
	}
	return appendVarint(b, field, v)
}

func appendFixed64(b []byte, field int, v uint64) []byte {
	if v == 0 {
		return b
	}
	return binary.LittleEndian.AppendUint64(appendTag(b, field, wtFixed64), v)
}

func appendFixed32(b []byte, field int, v uint32) []byte {
	if v == 0 {
		return b
	}
	return binary.LittleEndian.AppendUint32(appendTag(b, field, wtFixed32), v)
}

func appendBytes(b []byte, field int, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return append(binary.AppendUvarint(appendTag(b, field, wtBytes), uint64(len(v))), v...)
}

func appendString(b []byte, field int, v string) []byte {
	if v == "" {
		return b
	}
	return append(binary.AppendUvarint(appendTag(b, field, wtBytes), uint64(len(v))), v...)
}

// appendMessage writes an embedded message: the tag, then what body
// appends, length-prefixed. The body is written in place and moved right
// by the length's size, so nothing is allocated but b's growth.
func appendMessage(b []byte, field int, body func([]byte) []byte) []byte {
	b = appendTag(b, field, wtBytes)
	start := len(b)
	b = body(b)
	n := len(b) - start
	var lenBuf [binary.MaxVarintLen64]byte
	l := binary.PutUvarint(lenBuf[:], uint64(n))
	b = append(b, lenBuf[:l]...)
	copy(b[start+l:], b[start:start+n])
	copy(b[start:], lenBuf[:l])
	return b
}

// Field numbers of opentelemetry-proto v1.
const (
	// ExportTraceServiceRequest
	fRequestResourceSpans = 1
	// ResourceSpans
	fResourceSpansResource   = 1
	fResourceSpansScopeSpans = 2
	fResourceSpansSchemaURL  = 3
	// Resource
	fResourceAttributes = 1
	// ScopeSpans
	fScopeSpansScope     = 1
	fScopeSpansSpans     = 2
	fScopeSpansSchemaURL = 3
	// InstrumentationScope
	fScopeName       = 1
	fScopeVersion    = 2
	fScopeAttributes = 3
	// Span
	fSpanTraceID           = 1
	fSpanSpanID            = 2
	fSpanTraceState        = 3
	fSpanParentSpanID      = 4
	fSpanName              = 5
	fSpanKind              = 6
	fSpanStart             = 7
	fSpanEnd               = 8
	fSpanAttributes        = 9
	fSpanDroppedAttributes = 10
	fSpanEvents            = 11
	fSpanDroppedEvents     = 12
	fSpanLinks             = 13
	fSpanDroppedLinks      = 14
	fSpanStatus            = 15
	fSpanFlags             = 16
	// Span.Event
	fEventTime              = 1
	fEventName              = 2
	fEventAttributes        = 3
	fEventDroppedAttributes = 4
	// Span.Link
	fLinkTraceID           = 1
	fLinkSpanID            = 2
	fLinkTraceState        = 3
	fLinkAttributes        = 4
	fLinkDroppedAttributes = 5
	fLinkFlags             = 6
	// Status
	fStatusMessage = 2
	fStatusCode    = 3
	// KeyValue
	fKVKey   = 1
	fKVValue = 2
	// AnyValue
	fAnyString = 1
	fAnyBool   = 2
	fAnyInt    = 3
	fAnyDouble = 4
	fAnyArray  = 5
	fAnyKVList = 6
	fAnyBytes  = 7
	// ArrayValue, KeyValueList
	fValues = 1
)

// Status codes and span flags of trace.proto.
const (
	statusOK    = 1
	statusError = 2
	// flagHasIsRemote says the flags tell whether the parent is remote;
	// flagIsRemote that it is.
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

// Marshal encodes spans as an OTLP ExportTraceServiceRequest: one
// ResourceSpans per resource, one ScopeSpans per instrumentation scope
// within it, in the order first seen.
func Marshal(spans []sdktrace.ReadOnlySpan) []byte {
	type scopeKey struct {
		res   attribute.Distinct
		scope instrumentation.Scope
	}
	type group struct {
		res    attribute.Distinct
		scopes []scopeKey
	}
	var groups []*group
	byRes := map[attribute.Distinct]*group{}
	byScope := map[scopeKey][]sdktrace.ReadOnlySpan{}
	first := map[attribute.Distinct]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s == nil {
			continue
		}
		rk := s.Resource().Equivalent()
		g := byRes[rk]
		if g == nil {
			g = &group{res: rk}
			byRes[rk] = g
			groups = append(groups, g)
			first[rk] = s
		}
		sk := scopeKey{rk, s.InstrumentationScope()}
		if _, ok := byScope[sk]; !ok {
			g.scopes = append(g.scopes, sk)
		}
		byScope[sk] = append(byScope[sk], s)
	}
	var b []byte
	for _, g := range groups {
		res := first[g.res].Resource()
		b = appendMessage(b, fRequestResourceSpans, func(b []byte) []byte {
			b = appendMessage(b, fResourceSpansResource, func(b []byte) []byte {
				if res == nil {
					return b
				}
				it := res.Iter()
				for it.Next() {
					b = appendKeyValue(b, fResourceAttributes, it.Attribute())
				}
				return b
			})
			for _, sk := range g.scopes {
				b = appendMessage(b, fResourceSpansScopeSpans, func(b []byte) []byte {
					if sk.scope != (instrumentation.Scope{}) {
						b = appendMessage(b, fScopeSpansScope, func(b []byte) []byte {
							b = appendString(b, fScopeName, sk.scope.Name)
							b = appendString(b, fScopeVersion, sk.scope.Version)
							it := sk.scope.Attributes.Iter()
							for it.Next() {
								b = appendKeyValue(b, fScopeAttributes, it.Attribute())
							}
							return b
						})
					}
					for _, s := range byScope[sk] {
						b = appendMessage(b, fScopeSpansSpans, func(b []byte) []byte { return appendSpan(b, s) })
					}
					return appendString(b, fScopeSpansSchemaURL, sk.scope.SchemaURL)
				})
			}
			if res != nil {
				b = appendString(b, fResourceSpansSchemaURL, res.SchemaURL())
			}
			return b
		})
	}
	return b
}

func unixNano(t interface{ UnixNano() int64 }) uint64 {
	return uint64(max(0, t.UnixNano())) //nolint:gosec // not negative
}

func clampUint32(v int) uint64 {
	return uint64(min(max(v, 0), math.MaxUint32)) //nolint:gosec // clamped
}

// spanFlags are the W3C trace flags in the low 8 bits, and whether the
// parent (or linked) span context is remote.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | flagHasIsRemote
	if parent.IsRemote() {
		f |= flagIsRemote
	}
	return f
}

func appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = appendBytes(b, fSpanTraceID, tid[:])
	b = appendBytes(b, fSpanSpanID, sid[:])
	b = appendString(b, fSpanTraceState, sc.TraceState().String())
	if psid := s.Parent().SpanID(); psid.IsValid() {
		b = appendBytes(b, fSpanParentSpanID, psid[:])
	}
	b = appendString(b, fSpanName, s.Name())
	// trace.SpanKind numbers its kinds as trace.proto does.
	b = appendUint(b, fSpanKind, uint64(min(max(s.SpanKind(), 0), trace.SpanKindConsumer)))
	b = appendFixed64(b, fSpanStart, unixNano(s.StartTime()))
	b = appendFixed64(b, fSpanEnd, unixNano(s.EndTime()))
	for _, kv := range s.Attributes() {
		b = appendKeyValue(b, fSpanAttributes, kv)
	}
	b = appendUint(b, fSpanDroppedAttributes, clampUint32(s.DroppedAttributes()))
	for _, ev := range s.Events() {
		b = appendMessage(b, fSpanEvents, func(b []byte) []byte {
			b = appendFixed64(b, fEventTime, unixNano(ev.Time))
			b = appendString(b, fEventName, ev.Name)
			for _, kv := range ev.Attributes {
				b = appendKeyValue(b, fEventAttributes, kv)
			}
			return appendUint(b, fEventDroppedAttributes, clampUint32(ev.DroppedAttributeCount))
		})
	}
	b = appendUint(b, fSpanDroppedEvents, clampUint32(s.DroppedEvents()))
	for _, l := range s.Links() {
		b = appendMessage(b, fSpanLinks, func(b []byte) []byte {
			ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
			b = appendBytes(b, fLinkTraceID, ltid[:])
			b = appendBytes(b, fLinkSpanID, lsid[:])
			b = appendString(b, fLinkTraceState, l.SpanContext.TraceState().String())
			for _, kv := range l.Attributes {
				b = appendKeyValue(b, fLinkAttributes, kv)
			}
			b = appendUint(b, fLinkDroppedAttributes, clampUint32(l.DroppedAttributeCount))
			return appendFixed32(b, fLinkFlags, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		})
	}
	b = appendUint(b, fSpanDroppedLinks, clampUint32(s.DroppedLinks()))
	st := s.Status()
	b = appendMessage(b, fSpanStatus, func(b []byte) []byte {
		b = appendString(b, fStatusMessage, st.Description)
		switch st.Code {
		case codes.Ok:
			b = appendVarint(b, fStatusCode, statusOK)
		case codes.Error:
			b = appendVarint(b, fStatusCode, statusError)
		}
		return b
	})
	return appendFixed32(b, fSpanFlags, spanFlags(sc.TraceFlags(), s.Parent()))
}

func appendKeyValue(b []byte, field int, kv attribute.KeyValue) []byte {
	return appendMessage(b, field, func(b []byte) []byte {
		b = appendString(b, fKVKey, string(kv.Key))
		return appendMessage(b, fKVValue, func(b []byte) []byte { return appendAnyValue(b, kv.Value) })
	})
}

// appendAnyValue writes an AnyValue's body. Its members are a oneof: a
// member that is set is written even when zero (false, 0, "").
func appendAnyValue(b []byte, v attribute.Value) []byte {
	array := func(n int, elem func(b []byte, i int) []byte) []byte {
		return appendMessage(b, fAnyArray, func(b []byte) []byte {
			for i := range n {
				b = appendMessage(b, fValues, func(b []byte) []byte { return elem(b, i) })
			}
			return b
		})
	}
	str := func(b []byte, s string) []byte {
		return append(binary.AppendUvarint(appendTag(b, fAnyString, wtBytes), uint64(len(s))), s...)
	}
	boolean := func(b []byte, x bool) []byte {
		if x {
			return appendVarint(b, fAnyBool, 1)
		}
		return appendVarint(b, fAnyBool, 0)
	}
	integer := func(b []byte, x int64) []byte { return appendVarint(b, fAnyInt, uint64(x)) } //nolint:gosec // two's complement, as int64 is on the wire
	double := func(b []byte, x float64) []byte {
		return binary.LittleEndian.AppendUint64(appendTag(b, fAnyDouble, wtFixed64), math.Float64bits(x))
	}
	switch v.Type() {
	case attribute.BOOL:
		return boolean(b, v.AsBool())
	case attribute.INT64:
		return integer(b, v.AsInt64())
	case attribute.FLOAT64:
		return double(b, v.AsFloat64())
	case attribute.STRING:
		return str(b, v.AsString())
	case attribute.BYTESLICE:
		x := v.AsByteSlice()
		return append(binary.AppendUvarint(appendTag(b, fAnyBytes, wtBytes), uint64(len(x))), x...)
	case attribute.BOOLSLICE:
		xs := v.AsBoolSlice()
		return array(len(xs), func(b []byte, i int) []byte { return boolean(b, xs[i]) })
	case attribute.INT64SLICE:
		xs := v.AsInt64Slice()
		return array(len(xs), func(b []byte, i int) []byte { return integer(b, xs[i]) })
	case attribute.FLOAT64SLICE:
		xs := v.AsFloat64Slice()
		return array(len(xs), func(b []byte, i int) []byte { return double(b, xs[i]) })
	case attribute.STRINGSLICE:
		xs := v.AsStringSlice()
		return array(len(xs), func(b []byte, i int) []byte { return str(b, xs[i]) })
	case attribute.SLICE:
		xs := v.AsSlice()
		return array(len(xs), func(b []byte, i int) []byte { return appendAnyValue(b, xs[i]) })
	case attribute.MAP:
		kvs := v.AsMap()
		return appendMessage(b, fAnyKVList, func(b []byte) []byte {
			for _, kv := range kvs {
				b = appendKeyValue(b, fValues, kv)
			}
			return b
		})
	case attribute.EMPTY:
		return b
	default:
		return str(b, "INVALID")
	}
}
