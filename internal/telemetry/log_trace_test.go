package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// spanContext is a context holding a span with known ids, as a started
// span (or a producer's traceparent, as a remote parent) leaves it.
func spanContext(remote bool) (context.Context, trace.SpanContext) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		Remote:     remote,
	})
	return trace.ContextWithSpanContext(context.Background(), sc), sc
}

// A line logged while a span is active carries the span's trace_id and
// span_id, in both formats, through a logger's With; a line logged without
// one (context.Background, or Info, which passes no context) carries
// neither.
func TestLogLinesCarryTheIDsOfTheirSpan(t *testing.T) {
	ctx, sc := spanContext(false)
	traceID, spanID := "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if sc.TraceID().String() != traceID || sc.SpanID().String() != spanID {
		t.Fatalf("test ids: %s %s", sc.TraceID(), sc.SpanID())
	}

	var buf bytes.Buffer
	log, err := NewLogger(&buf, slog.LevelInfo, "json")
	if err != nil {
		t.Fatal(err)
	}
	log.With("route", "complaints").InfoContext(ctx, "accepted", "attempt", 1)
	log.InfoContext(context.Background(), "no span")
	log.Info("no context")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines: %s", buf.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first[TraceIDKey] != traceID || first[SpanIDKey] != spanID || first["route"] != "complaints" {
		t.Errorf("line with a span: %s", lines[0])
	}
	for _, l := range lines[1:] {
		if strings.Contains(l, TraceIDKey) || strings.Contains(l, SpanIDKey) {
			t.Errorf("line without a span carries ids: %s", l)
		}
	}

	buf.Reset()
	if log, err = NewLogger(&buf, slog.LevelInfo, "text"); err != nil {
		t.Fatal(err)
	}
	log.WarnContext(ctx, "retrying")
	if out := buf.String(); !strings.Contains(out, "trace_id="+traceID) || !strings.Contains(out, "span_id="+spanID) {
		t.Errorf("text line with a span: %q", out)
	}
}

// A producer's trace context, extracted from a message as the remote
// parent of the worker's span, links the line too: the worker's spans
// continue that trace.
func TestLogLinesCarryARemoteParentsIDs(t *testing.T) {
	ctx, sc := spanContext(true)
	var buf bytes.Buffer
	slog.New(WithTraceIDs(slog.NewJSONHandler(&buf, nil))).ErrorContext(ctx, "dead-lettered")
	if !strings.Contains(buf.String(), `"trace_id":"`+sc.TraceID().String()+`"`) {
		t.Errorf("%s", buf.String())
	}
}

// Without a span, the wrapper passes the record on at no cost: no
// allocation. (Measured on the wrapper alone: the JSON handler's buffers
// come from a sync.Pool, which the race detector empties at random.)
func TestTraceIDsCostNothingWithoutASpan(t *testing.T) {
	h := WithTraceIDs(acceptAll{})
	type otherKey struct{}
	ctx := context.WithValue(context.Background(), otherKey{}, "not a span")
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "accepted", 0)
	r.AddAttrs(slog.String("route", "complaints"), slog.Int("attempt", 1))
	if n := testing.AllocsPerRun(100, func() { _ = h.Handle(ctx, r) }); n != 0 {
		t.Errorf("%v allocations per record without a span", n)
	}
	spanCtx, _ := spanContext(false)
	if n := testing.AllocsPerRun(100, func() { _ = h.Handle(spanCtx, r) }); n == 0 {
		t.Error("no allocation with a span: are the ids added at all?")
	}
}

// acceptAll is a handler that takes every record and writes nothing.
type acceptAll struct{}

func (acceptAll) Enabled(context.Context, slog.Level) bool  { return true }
func (acceptAll) Handle(context.Context, slog.Record) error { return nil }
func (h acceptAll) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h acceptAll) WithGroup(string) slog.Handler           { return h }

// The cost of a log line with and without a span, through the worker's
// JSON handler. Run with go test -run '^$' -bench Log -benchmem
// ./internal/telemetry/
func BenchmarkLogLine(b *testing.B) {
	spanCtx, _ := spanContext(false)
	for _, c := range []struct {
		name    string
		handler slog.Handler
		ctx     context.Context
	}{
		{"plain-handler", slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{ReplaceAttr: jsonValue}), context.Background()},
		{"no-span", WithTraceIDs(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{ReplaceAttr: jsonValue})), context.Background()},
		{"span", WithTraceIDs(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{ReplaceAttr: jsonValue})), spanCtx},
	} {
		log := slog.New(c.handler)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				log.InfoContext(c.ctx, "accepted", "route", "complaints", "attempt", 1)
			}
		})
	}
}
