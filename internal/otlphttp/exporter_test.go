package otlphttp

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// collector is a real HTTP server that records what it is sent and
// answers from a script (then 200).
type collector struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*recorded
	answers  []func(w http.ResponseWriter)
}

type recorded struct {
	path   string
	header http.Header
	body   []byte // decompressed
}

func newCollector(t *testing.T, tls bool, answers ...func(w http.ResponseWriter)) *collector {
	c := &collector{answers: answers}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		c.mu.Lock()
		c.requests = append(c.requests, &recorded{r.URL.Path, r.Header.Clone(), b})
		var answer func(http.ResponseWriter)
		if len(c.answers) > 0 {
			answer, c.answers = c.answers[0], c.answers[1:]
		}
		c.mu.Unlock()
		if answer != nil {
			answer(w)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	if tls {
		c.Server = httptest.NewTLSServer(h)
	} else {
		c.Server = httptest.NewServer(h)
	}
	t.Cleanup(c.Close)
	return c
}

func (c *collector) got() []*recorded {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*recorded(nil), c.requests...)
}

func oneSpan(name string) []sdktrace.ReadOnlySpan {
	return tracetest.SpanStubs{{
		Name:        name,
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}),
	}}.Snapshots()
}

// noSleep records the retry waits instead of waiting them.
type noSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (n *noSleep) sleep(ctx context.Context, d time.Duration) error {
	n.mu.Lock()
	n.waits = append(n.waits, d)
	n.mu.Unlock()
	return ctx.Err()
}

// The base endpoint gets /v1/traces; the headers are sent percent-decoded,
// with the protobuf content type and a gzip body when asked; the body is
// the spans.
func TestExportPostsProtobufToTheBaseEndpoint(t *testing.T) {
	c := newCollector(t, false)
	e, err := New(envOf(
		"OTEL_EXPORTER_OTLP_ENDPOINT", c.URL+"/otlp",
		"OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20sekret, x-tenant = acme ",
		"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip",
	), Options{UserAgent: "agentrelay/test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ExportSpans(context.Background(), oneSpan("sent-span")); err != nil {
		t.Fatal(err)
	}
	got := c.got()
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	r := got[0]
	for k, want := range map[string]string{
		"Authorization": "Bearer sekret", "X-Tenant": "acme", "Content-Type": "application/x-protobuf",
		"Content-Encoding": "gzip", "User-Agent": "agentrelay/test",
	} {
		if v := r.header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if r.path != "/otlp/v1/traces" {
		t.Errorf("path %q, want /otlp/v1/traces", r.path)
	}
	rs := decodeRequest(t, r.body)
	if name := rs[0].GetScopeSpans()[0].GetSpans()[0].GetName(); name != "sent-span" {
		t.Errorf("span %q, want sent-span", name)
	}
}

// The traces endpoint is used as it is, and wins over the base one.
func TestTracesEndpointIsUsedAsItIs(t *testing.T) {
	c := newCollector(t, false)
	e, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere.invalid:4318",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", c.URL+"/custom/path"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ExportSpans(context.Background(), oneSpan("x")); err != nil {
		t.Fatal(err)
	}
	if p := c.got()[0].path; p != "/custom/path" {
		t.Errorf("path %q, want /custom/path", p)
	}
	def, err := New(envOf(), Options{})
	if err != nil || def.Endpoint() != DefaultEndpoint {
		t.Errorf("default endpoint %q (%v), want %s", def.Endpoint(), err, DefaultEndpoint)
	}
}

// 429, 502, 503 and 504 are retried, after the collector's Retry-After
// when it gives one, else after the backoff; the same body is sent again.
func TestRetryableAnswersAreRetried(t *testing.T) {
	status := func(code int, retryAfter string) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(code)
		}
	}
	c := newCollector(t, false, status(503, "2"), status(429, ""), status(502, ""), status(504, ""))
	ns := &noSleep{}
	e, err := New(envOf("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", c.URL+"/v1/traces"), Options{sleep: ns.sleep})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ExportSpans(context.Background(), oneSpan("retried")); err != nil {
		t.Fatal(err)
	}
	got := c.got()
	if len(got) != 5 {
		t.Fatalf("%d requests, want 5 (4 retryable answers, then 200)", len(got))
	}
	if !bytes.Equal(got[0].body, got[4].body) {
		t.Error("the retry sent another body")
	}
	if ns.waits[0] != 2*time.Second {
		t.Errorf("first wait %v, want the Retry-After of 2s", ns.waits[0])
	}
	if w := ns.waits[1]; w < retryInitial/2 || w > retryInitial*3/2 {
		t.Errorf("second wait %v, want the initial backoff %v ±50 %%", w, retryInitial)
	}
}

// A collector that stays unavailable is given up on after a minute of
// retries, with its last answer as the error.
func TestRetriesStopAfterAMinute(t *testing.T) {
	var answers []func(http.ResponseWriter)
	for range 100 {
		answers = append(answers, func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) })
	}
	c := newCollector(t, false, answers...)
	ns := &noSleep{}
	e, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", c.URL), Options{sleep: ns.sleep})
	if err != nil {
		t.Fatal(err)
	}
	err = e.ExportSpans(context.Background(), oneSpan("x"))
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v, want the 503", err)
	}
	var total time.Duration
	for _, w := range ns.waits {
		total += w
	}
	if total > retryMaxElapsed || len(c.got()) < 3 || len(c.got()) > 10 {
		t.Errorf("%d attempts over %v of waits, want a few within %v", len(c.got()), total, retryMaxElapsed)
	}
}

// Other answers fail at once, with the status and the collector's message
// (a google.rpc.Status in protobuf, or text).
func TestOtherAnswersFailAtOnce(t *testing.T) {
	rpcStatus := appendString(appendVarint(nil, 1, 3), 2, "span name is required")
	c := newCollector(t, false, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(rpcStatus)
	})
	e, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", c.URL), Options{sleep: (&noSleep{}).sleep})
	if err != nil {
		t.Fatal(err)
	}
	err = e.ExportSpans(context.Background(), oneSpan("x"))
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "span name is required") {
		t.Errorf("err = %v, want the 400 and its message", err)
	}
	if n := len(c.got()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// A partial success is an error saying how many spans were rejected.
func TestPartialSuccessIsReported(t *testing.T) {
	partial := appendMessage(nil, 1, func(b []byte) []byte {
		return appendString(appendVarint(b, 1, 3), 2, "3 spans too old")
	})
	c := newCollector(t, false, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(partial)
	})
	e, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", c.URL), Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = e.ExportSpans(context.Background(), oneSpan("x"))
	if !errors.Is(err, ErrPartialSuccess) || !strings.Contains(err.Error(), "3 spans rejected: 3 spans too old") {
		t.Errorf("err = %v, want a partial success of 3 spans", err)
	}
}

// https with the collector's CA from OTEL_EXPORTER_OTLP_CERTIFICATE works;
// without it the certificate is refused at once, not retried.
func TestTLSWithTheConfiguredCA(t *testing.T) {
	c := newCollector(t, true)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", c.URL, "OTEL_EXPORTER_OTLP_CERTIFICATE", ca), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ExportSpans(context.Background(), oneSpan("x")); err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	ns := &noSleep{}
	untrusting, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", c.URL), Options{sleep: ns.sleep})
	if err != nil {
		t.Fatal(err)
	}
	if err := untrusting.ExportSpans(context.Background(), oneSpan("x")); err == nil {
		t.Fatal("exported to an unknown certificate authority")
	}
	if len(ns.waits) != 0 {
		t.Errorf("a certificate error was retried %d times", len(ns.waits))
	}
}

// Every malformed setting is listed at once, and a header's value (a
// credential, often) is not repeated.
func TestBadSettingsAreListedTogether(t *testing.T) {
	_, err := New(envOf(
		"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318",
		"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd",
		"OTEL_EXPORTER_OTLP_TIMEOUT", "10s",
		"OTEL_EXPORTER_OTLP_HEADERS", "api-key:s3cr3t-value",
		"OTEL_EXPORTER_OTLP_INSECURE", "maybe",
		"OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem",
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/nonexistent/cert.pem",
	), Options{})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
	for _, want := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_TIMEOUT",
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_CERTIFICATE", "CLIENT_KEY"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error repeats a header value: %v", err)
	}
}

// INSECURE=true sends plain http to an https endpoint, as the upstream
// exporter does.
func TestInsecureForcesPlainHTTP(t *testing.T) {
	e, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318", "OTEL_EXPORTER_OTLP_INSECURE", "true"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Endpoint() != "http://collector:4318/v1/traces" {
		t.Errorf("endpoint %q", e.Endpoint())
	}
}

// After Shutdown, nothing more is sent.
func TestExportAfterShutdownFails(t *testing.T) {
	c := newCollector(t, false)
	e, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", c.URL), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.ExportSpans(context.Background(), oneSpan("x")); !errors.Is(err, ErrShutdown) {
		t.Errorf("err = %v, want ErrShutdown", err)
	}
	if n := len(c.got()); n != 0 {
		t.Errorf("%d requests after shutdown", n)
	}
}

// With the SDK's batch processor, as agentrelay runs it: spans ended
// before Shutdown reach the collector.
func TestBatchProcessorFlushesThroughTheExporter(t *testing.T) {
	c := newCollector(t, false)
	e, err := New(envOf("OTEL_EXPORTER_OTLP_ENDPOINT", c.URL), Options{})
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(e))
	for range 3 {
		_, span := tp.Tracer("t").Start(context.Background(), "batched")
		span.End()
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range c.got() {
		for _, rs := range decodeRequest(t, r.body) {
			for _, ss := range rs.GetScopeSpans() {
				n += len(ss.GetSpans())
			}
		}
	}
	if n != 3 {
		t.Errorf("collector got %d spans, want 3", n)
	}
}
