// Package tracing starts OpenTelemetry tracing as the OTEL_* environment
// asks, for the worker and for the command line's SRE tools alike: which
// exporter, how spans leave the process, and how export failures are
// reported without leaking credentials.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agentrelay/agentrelay/internal/buildinfo"
	"github.com/agentrelay/agentrelay/internal/otlphttp"
)

// Tracing is off unless the standard OpenTelemetry environment asks for
// it. The switch, in order:
//
//  1. OTEL_SDK_DISABLED=true: off, whatever else is set.
//  2. OTEL_TRACES_EXPORTER set: "none" is off; otherwise a comma-separated
//     list of "otlp" and "console" (spans as JSON on stdout), and anything
//     else is an error rather than a silent no.
//  3. OTEL_TRACES_EXPORTER unset: on, with "otlp", when
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is
//     set; off otherwise. (The specification's default exporter is otlp,
//     but a worker that starts exporting to localhost:4318 because nobody
//     said otherwise would surprise its operators.)
//
// OTLP goes over http/protobuf, the specification's default and what every
// collector accepts (port 4318). OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL may say so; "grpc" (or anything else) is an
// error at start-up, not a silent switch to HTTP: an endpoint written for
// gRPC (port 4317) would otherwise fail every export. The exporter is
// internal/otlphttp, not the OpenTelemetry project's exporters: those link
// the gRPC stack and the protobuf registry, ~6 MB of binary and ~5 MiB of
// resident memory in every worker, tracing on or off (BENCHMARKS.md).
// The exporter reads its endpoint, headers, TLS, compression and timeout
// from OTEL_EXPORTER_OTLP_* as the OpenTelemetry exporter does (see
// package otlphttp), and a malformed value stops start-up. Everything
// else is the OpenTelemetry SDK's own reading of the environment: the
// sampler (OTEL_TRACES_SAMPLER,
// default parentbased_always_on), the batch span processor (OTEL_BSP_*),
// and the resource (OTEL_SERVICE_NAME, default WorkerServiceName or
// CLIServiceName; OTEL_RESOURCE_ATTRIBUTES).
//
// go.opentelemetry.io/contrib/exporters/autoexport implements the same
// switch, but links the metric and log exporters and a Prometheus bridge
// that agentrelay does not use.

// Trace exporter names of OTEL_TRACES_EXPORTER.
const (
	ExporterOTLP    = "otlp"
	ExporterConsole = "console"
	ExporterNone    = "none"
)

// ProtocolHTTP is the one OTLP protocol of OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL
// agentrelay exports over.
const ProtocolHTTP = "http/protobuf"

// protocolGRPC is the specification's other protocol, named in the error
// that refuses it.
const protocolGRPC = "grpc"

// Service names (service.name) of agentrelay's spans unless
// OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) says otherwise: the
// worker's, and the one-shot commands' (publish --trace, dlq replay), so
// that a trace view tells them apart.
const (
	WorkerServiceName = "agentrelay-worker"
	CLIServiceName    = "agentrelay-cli"
)

// ErrEnv is wrapped by errors in the OTEL_* environment.
var ErrEnv = errors.New("OpenTelemetry environment")

// Config is what the OTEL_* environment says about tracing.
type Config struct {
	On        bool
	Exporters []string // ExporterOTLP, ExporterConsole
	Protocol  string   // ProtocolHTTP when Exporters has otlp
	Why       string   // which variable decided, for the log
}

// ParseEnv reads the tracing switch from the environment (see the
// comment above). It reads nothing but names; the SDK reads the rest.
func ParseEnv(getenv func(string) string) (Config, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return Config{Why: "OTEL_SDK_DISABLED=true"}, nil
	}
	var tc Config
	if v := get("OTEL_TRACES_EXPORTER"); v != "" {
		for _, name := range strings.Split(v, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			switch name {
			case ExporterNone:
				if v != ExporterNone {
					return Config{}, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: %q cannot be listed with other exporters", ErrEnv, v, ExporterNone)
				}
				return Config{Why: "OTEL_TRACES_EXPORTER=none"}, nil
			case ExporterOTLP, ExporterConsole:
				if !slices.Contains(tc.Exporters, name) {
					tc.Exporters = append(tc.Exporters, name)
				}
			default:
				return Config{}, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: unknown exporter %q (agentrelay has otlp, console and none)", ErrEnv, v, name)
			}
		}
		tc.Why = "OTEL_TRACES_EXPORTER"
	} else {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			if get(k) != "" {
				tc.Exporters, tc.Why = []string{ExporterOTLP}, k
				break
			}
		}
		if tc.Exporters == nil {
			return Config{Why: "neither OTEL_TRACES_EXPORTER nor an OTLP endpoint is set"}, nil
		}
	}
	tc.On = true
	if slices.Contains(tc.Exporters, ExporterOTLP) {
		k := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
		p := get(k)
		if p == "" {
			k = "OTEL_EXPORTER_OTLP_PROTOCOL"
			p = get(k)
		}
		switch p {
		case "", ProtocolHTTP:
			tc.Protocol = ProtocolHTTP
		case protocolGRPC:
			return Config{}, fmt.Errorf("%w: %s=%s: agentrelay exports traces over OTLP %s only; "+
				"set %s=%s (or unset it) and point the endpoint at the collector's OTLP/HTTP port (4318 by default)",
				ErrEnv, k, p, ProtocolHTTP, k, ProtocolHTTP)
		default:
			return Config{}, fmt.Errorf("%w: %s=%q: agentrelay exports traces over OTLP %s only", ErrEnv, k, p, ProtocolHTTP)
		}
	}
	return tc, nil
}

// Tracer is the process's tracer provider: the SDK's when tracing is on,
// a no-op one otherwise.
type Tracer struct {
	Config   Config
	Provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when off
	errs     *exportErrors            // nil when off
}

// Start builds the tracer provider the environment asks for (see
// ParseEnv), with service (WorkerServiceName, CLIServiceName) as
// service.name unless the environment names one; console spans go to
// stdout. Spans are exported in batches, in the background: a slow or
// unreachable collector costs dropped spans (OTEL_BSP_MAX_QUEUE_SIZE),
// never a delayed event. Export errors go to log, rate-limited and with
// the OTLP header values scrubbed (they may hold credentials). Shutdown
// flushes what is left. extra options apply after the environment's (a
// command that must sample its span whatever OTEL_TRACES_SAMPLER says).
func Start(ctx context.Context, service string, getenv func(string) string, stdout io.Writer, log *slog.Logger, extra ...sdktrace.TracerProviderOption) (*Tracer, error) {
	tc, err := ParseEnv(getenv)
	if err != nil {
		return nil, err
	}
	if !tc.On {
		return &Tracer{Config: tc, Provider: noop.NewTracerProvider()}, nil
	}
	var opts []sdktrace.TracerProviderOption
	errs := newExportErrors(log, getenv)
	for _, name := range tc.Exporters {
		exp, err := newExporter(name, getenv, stdout)
		if err != nil {
			return nil, fmt.Errorf("tracing: %s exporter: %w", name, err)
		}
		opts = append(opts, sdktrace.WithBatcher(reportingExporter{exp, errs}))
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service), semconv.ServiceVersion(buildinfo.Get().Version)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // last: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		// A malformed OTEL_RESOURCE_ATTRIBUTES: the rest still applies.
		log.Warn("tracing: resource attributes", "err", err)
	}
	opts = append(opts, sdktrace.WithResource(res))
	tp := sdktrace.NewTracerProvider(append(opts, extra...)...)
	log.Info("tracing on", "exporters", strings.Join(tc.Exporters, ","), "protocol", tc.Protocol, "switched_on_by", tc.Why,
		"sampler", orDefault(getenv("OTEL_TRACES_SAMPLER"), "parentbased_always_on"))
	return &Tracer{Config: tc, Provider: tp, sdk: tp, errs: errs}, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func newExporter(name string, getenv func(string) string, stdout io.Writer) (sdktrace.SpanExporter, error) {
	if name == ExporterConsole {
		return stdouttrace.New(stdouttrace.WithWriter(stdout))
	}
	// It does not connect until the first export.
	return otlphttp.New(getenv, otlphttp.Options{UserAgent: "agentrelay/" + buildinfo.Get().Version})
}

// Shutdown exports the spans still queued and stops the exporters, within
// ctx. It does nothing when tracing is off.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}

// Scrubbed is err's text without the OTLP header values.
func (t *Tracer) Scrubbed(err error) string {
	if t == nil || t.errs == nil {
		return err.Error()
	}
	return t.errs.scrub(err.Error())
}

// ShutdownTimeout bounds the final flush of spans at exit: an
// unreachable collector must not hold up a rolling update.
const ShutdownTimeout = 5 * time.Second

// exportErrors logs the SDK's errors (failed exports, mostly) at warn: the
// first at once, then at most one per exportErrorEvery with the count of
// those left out, so a collector that is down fills no disk. The values of
// OTEL_EXPORTER_OTLP_HEADERS and OTEL_EXPORTER_OTLP_TRACES_HEADERS, and
// the password of a URL, are replaced by "REDACTED": they may hold the
// collector's credentials, and some errors quote a request.
type exportErrors struct {
	log     *slog.Logger
	secrets []string

	mu       sync.Mutex
	last     time.Time
	withheld int
}

const exportErrorEvery = 30 * time.Second

func newExportErrors(log *slog.Logger, getenv func(string) string) *exportErrors {
	e := &exportErrors{log: log}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		for _, kv := range strings.Split(getenv(k), ",") {
			_, v, ok := strings.Cut(kv, "=")
			if v = strings.TrimSpace(v); ok && len(v) >= 4 {
				e.secrets = append(e.secrets, v)
				// The exporter sends the unescaped value.
				for _, unescape := range []func(string) (string, error){url.PathUnescape, url.QueryUnescape} {
					if u, err := unescape(v); err == nil && u != v {
						e.secrets = append(e.secrets, u)
					}
				}
			}
		}
	}
	return e
}

// reportingExporter hands a failed export's error to errs and reports
// success to the batch processor, which would otherwise pass the error to
// OpenTelemetry's process-wide handler (by default, unscrubbed to stderr).
// The spans of a failed export are dropped either way.
type reportingExporter struct {
	sdktrace.SpanExporter
	errs *exportErrors
}

func (r reportingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	r.errs.Handle(r.SpanExporter.ExportSpans(ctx, spans))
	return nil
}

// Handle logs err (nil: nothing), scrubbed and rate-limited.
func (e *exportErrors) Handle(err error) {
	if err == nil {
		return
	}
	e.mu.Lock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < exportErrorEvery {
		e.withheld++
		e.mu.Unlock()
		return
	}
	withheld := e.withheld
	e.last, e.withheld = now, 0
	e.mu.Unlock()
	e.log.Warn("tracing: exporting spans failed; delivery goes on, spans may be dropped",
		"err", e.scrub(err.Error()), "errors_since_last_logged", withheld)
}

func (e *exportErrors) scrub(s string) string {
	for _, v := range e.secrets {
		s = strings.ReplaceAll(s, v, "REDACTED")
	}
	return scrubURLPasswords(s)
}

// scrubURLPasswords replaces the password of every "scheme://user:pass@"
// in s.
func scrubURLPasswords(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := strings.IndexAny(s, "/ \t\n\"'")
		if end < 0 {
			end = len(s)
		}
		auth := s[:end]
		if at := strings.LastIndexByte(auth, '@'); at >= 0 {
			if colon := strings.IndexByte(auth[:at], ':'); colon >= 0 {
				b.WriteString(auth[:colon+1] + "REDACTED@")
				s = s[at+1:]
				continue
			}
		}
	}
}
