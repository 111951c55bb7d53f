package tracing

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// The switch: off by default, on by an exporter or an OTLP endpoint, and
// OTEL_SDK_DISABLED beats everything.
func TestParseTracingEnv(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       []string
		on        bool
		exporters []string
		protocol  string
		err       bool
	}{
		{name: "nothing set: off"},
		{name: "service name alone: off", env: []string{"OTEL_SERVICE_NAME", "x"}},
		{name: "endpoint", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"}, on: true, exporters: []string{"otlp"}, protocol: ProtocolHTTP},
		{name: "traces endpoint", env: []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces"}, on: true, exporters: []string{"otlp"}, protocol: ProtocolHTTP},
		{name: "http/protobuf said", env: []string{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"}, on: true, exporters: []string{"otlp"}, protocol: ProtocolHTTP},
		{name: "traces protocol wins", env: []string{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"}, on: true, exporters: []string{"otlp"}, protocol: ProtocolHTTP},
		{name: "console and otlp", env: []string{"OTEL_TRACES_EXPORTER", " Console , otlp,console"}, on: true, exporters: []string{"console", "otlp"}, protocol: ProtocolHTTP},
		{name: "console only has no protocol", env: []string{"OTEL_TRACES_EXPORTER", "console", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}, on: true, exporters: []string{"console"}},
		{name: "none beats an endpoint", env: []string{"OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"}},
		{name: "disabled beats an exporter", env: []string{"OTEL_SDK_DISABLED", "TRUE", "OTEL_TRACES_EXPORTER", "otlp"}},
		{name: "disabled=false leaves it on", env: []string{"OTEL_SDK_DISABLED", "false", "OTEL_TRACES_EXPORTER", "otlp"}, on: true, exporters: []string{"otlp"}, protocol: ProtocolHTTP},
		{name: "unknown exporter", env: []string{"OTEL_TRACES_EXPORTER", "jaeger"}, err: true},
		{name: "none among others", env: []string{"OTEL_TRACES_EXPORTER", "otlp,none"}, err: true},
		{name: "grpc", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}, err: true},
		{name: "grpc for traces", env: []string{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"}, err: true},
		{name: "http/json", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEnv(envOf(tc.env...))
			if tc.err {
				if !errors.Is(err, ErrEnv) {
					t.Fatalf("err = %v, want ErrEnv", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.On != tc.on || !slices.Equal(got.Exporters, tc.exporters) || got.Protocol != tc.protocol {
				t.Errorf("got on=%v exporters=%v protocol=%q, want on=%v exporters=%v protocol=%q", got.On, got.Exporters, got.Protocol, tc.on, tc.exporters, tc.protocol)
			}
			if got.Why == "" {
				t.Error("no reason given")
			}
		})
	}
}

// Off means a provider that records nothing; on, Shutdown exports the
// spans still queued (the batch is flushed at exit), under the service.name
// given unless OTEL_SERVICE_NAME says otherwise.
func TestStartTracingFlushesAtShutdown(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	off, err := Start(ctx, WorkerServiceName, envOf(), &bytes.Buffer{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, span := off.Provider.Tracer("t").Start(ctx, "x"); span.IsRecording() {
		t.Error("tracing off, yet a span records")
	}
	if err := off.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	for _, svc := range []string{"", "relay-eu"} {
		if svc != "" {
			t.Setenv("OTEL_SERVICE_NAME", svc)
		}
		var out bytes.Buffer
		on, err := Start(ctx, WorkerServiceName, envOf("OTEL_TRACES_EXPORTER", "console"), &out, log)
		if err != nil {
			t.Fatal(err)
		}
		_, span := on.Provider.Tracer("t").Start(ctx, "flushed-span", trace.WithSpanKind(trace.SpanKindConsumer))
		span.End()
		if out.Len() != 0 {
			t.Fatalf("span exported before shutdown: the batch processor should hold it")
		}
		if err := on.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		want := WorkerServiceName
		if svc != "" {
			want = svc
		}
		if s := out.String(); !strings.Contains(s, "flushed-span") || !strings.Contains(s, `"Value":"`+want+`"`) {
			t.Errorf("after shutdown the console exporter wrote %q; want the span, service.name %s", s, want)
		}
	}
}

// OTLP goes over http/protobuf: with only an endpoint set, the spans reach
// the collector as a protobuf POST to /v1/traces when the batch is flushed.
func TestOTLPExportsOverHTTPProtobuf(t *testing.T) {
	type post struct {
		path, contentType string
		body              []byte
	}
	got := make(chan post, 4)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- post{r.URL.Path, r.Header.Get("Content-Type"), body}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	ctx := context.Background()
	tr, err := Start(ctx, WorkerServiceName, envOf("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL), io.Discard, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Config.Protocol != ProtocolHTTP {
		t.Errorf("protocol %q, want %s", tr.Config.Protocol, ProtocolHTTP)
	}
	_, span := tr.Provider.Tracer("t").Start(ctx, "exported-over-http")
	span.End()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p.path != "/v1/traces" || p.contentType != "application/x-protobuf" || !bytes.Contains(p.body, []byte("exported-over-http")) {
			t.Errorf("collector got POST %s (%s, %d bytes), want /v1/traces, application/x-protobuf, holding the span", p.path, p.contentType, len(p.body))
		}
	default:
		t.Fatal("the collector got nothing by the end of Shutdown")
	}
}

// A malformed exporter setting stops start-up instead of being ignored.
func TestBadOTLPSettingIsAStartUpError(t *testing.T) {
	_, err := Start(context.Background(), WorkerServiceName, envOf("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318", "OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
		io.Discard, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_TIMEOUT") {
		t.Fatalf("err = %v, want one naming OTEL_EXPORTER_OTLP_TIMEOUT", err)
	}
}

// gRPC is not linked: asking for it stops start-up with the variable that
// asked and what to set instead, rather than exporting over HTTP to an
// endpoint meant for gRPC.
func TestGRPCProtocolIsAStartUpError(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		t.Run(k, func(t *testing.T) {
			_, err := Start(context.Background(), WorkerServiceName, envOf("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317", k, "grpc"),
				io.Discard, slog.New(slog.DiscardHandler))
			if !errors.Is(err, ErrEnv) {
				t.Fatalf("err = %v, want ErrEnv", err)
			}
			for _, want := range []string{k + "=grpc", "http/protobuf", "4318"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// Export errors are logged without the OTLP header values (credentials) or
// a URL's password, and not once per failed batch.
func TestExportErrorsAreScrubbedAndRateLimited(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	e := newExportErrors(log, envOf(
		"OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20sekret-123,x-tenant=acme-co",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=k3y-456"))
	e.Handle(errors.New(`post https://user:pa55word@collector:4318/v1/traces: header Authorization: Bearer sekret-123, api-key k3y-456, tenant acme-co`))
	e.Handle(errors.New("second"))
	e.Handle(errors.New("third"))
	s := logs.String()
	for _, secret := range []string{"sekret-123", "k3y-456", "acme-co", "pa55word"} {
		if strings.Contains(s, secret) {
			t.Errorf("log holds %q: %s", secret, s)
		}
	}
	if !strings.Contains(s, "user:REDACTED@collector") {
		t.Errorf("log lost the error's shape: %s", s)
	}
	if n := strings.Count(s, "exporting spans failed"); n != 1 {
		t.Errorf("%d log lines for 3 errors within %v, want 1: %s", n, exportErrorEvery, s)
	}
}

// A failed export is logged like any other export error and reported to
// the batch processor as done, so nothing reaches OpenTelemetry's
// process-wide error handler (which agentrelay leaves alone).
func TestAFailedExportIsLoggedHereNotByTheGlobalHandler(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := reportingExporter{failingExporter{errors.New("collector down: Bearer sekret-123")},
		newExportErrors(log, envOf("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20sekret-123"))}
	if err := r.ExportSpans(context.Background(), nil); err != nil {
		t.Errorf("ExportSpans = %v, want nil (the error is ours to report)", err)
	}
	s := logs.String()
	if !strings.Contains(s, "exporting spans failed") || !strings.Contains(s, "collector down") || strings.Contains(s, "sekret-123") {
		t.Errorf("log = %q, want the failure, scrubbed", s)
	}
}

type failingExporter struct{ err error }

func (f failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return f.err }
func (failingExporter) Shutdown(context.Context) error                               { return nil }
