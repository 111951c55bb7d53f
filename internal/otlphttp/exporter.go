// Package otlphttp exports trace spans over OTLP/HTTP with protobuf
// bodies: what go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp
// does, configured by the same OTEL_EXPORTER_OTLP_* environment, without
// the gRPC stack and protobuf registry that exporter links (~6 MB of
// binary and ~5 MiB of resident memory in a worker that mostly never
// traces; see BENCHMARKS.md). It sends spans only: no metrics, no logs.
//
// Configuration, from the environment (a TRACES_ variable wins over the
// general one):
//
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, used as it is (an empty path is
//     "/"), or OTEL_EXPORTER_OTLP_ENDPOINT, to which /v1/traces is
//     appended; default http://localhost:4318/v1/traces. https uses TLS.
//   - OTEL_EXPORTER_OTLP_(TRACES_)INSECURE=true: plain http whatever the
//     scheme (as the upstream exporter does).
//   - OTEL_EXPORTER_OTLP_(TRACES_)HEADERS: key=value,... with
//     percent-encoded values.
//   - OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION: gzip or none (default).
//   - OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT: milliseconds per export,
//     default 10000.
//   - OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE, CLIENT_CERTIFICATE and
//     CLIENT_KEY: PEM files for the server's CA and a client certificate.
//
// A malformed value is an error from New, all of them at once, where the
// upstream exporter logs and ignores it.
//
// Sending follows the OTLP/HTTP specification: 2xx is success (a partial
// success in the answer is returned as an error saying how many spans
// were rejected); 429, 502, 503, 504 and network errors are retried with
// exponential backoff (5 s, ×1.5, jittered, at most 30 s apart, for at most
// a minute, within the caller's context) honouring Retry-After; anything
// else fails at once.
package otlphttp

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Errors.
var (
	// ErrConfig is wrapped by every configuration error of New.
	ErrConfig = errors.New("otlphttp: OTEL_EXPORTER_OTLP configuration")
	// ErrShutdown: ExportSpans after Shutdown.
	ErrShutdown = errors.New("otlphttp: exporter is shut down")
	// ErrPartialSuccess: the collector took the request but rejected some
	// of its spans.
	ErrPartialSuccess = errors.New("otlphttp: partial success")
)

// Defaults.
const (
	DefaultEndpoint = "http://localhost:4318/v1/traces"
	DefaultTimeout  = 10 * time.Second
	tracesPath      = "/v1/traces"
	// maxResponse bounds how much of an answer is read.
	maxResponse = 4 << 20
)

// Retry policy: as the upstream exporter's.
const (
	retryInitial    = 5 * time.Second
	retryMax        = 30 * time.Second
	retryMaxElapsed = time.Minute
	retryMultiplier = 1.5
)

// Options are what the environment does not say. The zero value is usable.
type Options struct {
	// UserAgent is sent as User-Agent. Default "agentrelay".
	UserAgent string
	// Transport replaces the HTTP transport (tests); TLS settings of the
	// environment are then ignored.
	Transport http.RoundTripper
	// sleep waits between retries (tests shorten it); nil: a timer.
	sleep func(context.Context, time.Duration) error
}

// Exporter sends spans to an OTLP/HTTP collector. It implements
// sdktrace.SpanExporter and is safe for concurrent use.
type Exporter struct {
	url      string
	headers  http.Header
	gzip     bool
	timeout  time.Duration
	hc       *http.Client
	sleep    func(context.Context, time.Duration) error
	shutdown atomic.Bool
}

var _ sdktrace.SpanExporter = (*Exporter)(nil)

// New reads the exporter's configuration from getenv (os.Getenv in
// production) and returns the exporter. It does not connect.
func New(getenv func(string) string, o Options) (*Exporter, error) {
	env := otlpEnv{getenv: getenv}
	e := &Exporter{headers: http.Header{}, sleep: o.sleep}
	if e.sleep == nil {
		e.sleep = sleepCtx
	}
	// Read in this order, so the errors are listed in it.
	e.url = env.endpoint()
	env.headers(e.headers)
	e.gzip = env.gzip()
	e.timeout = env.timeout()
	rt := o.Transport
	if rt == nil {
		rt = newTransport(env.tlsConfig())
	}
	if len(env.errs) > 0 {
		return nil, errors.Join(env.errs...)
	}
	ua := o.UserAgent
	if ua == "" {
		ua = "agentrelay"
	}
	e.headers.Set("User-Agent", ua)
	e.headers.Set("Content-Type", "application/x-protobuf")
	if e.gzip {
		e.headers.Set("Content-Encoding", "gzip")
	}
	e.hc = &http.Client{Transport: rt}
	return e, nil
}

// otlpEnv reads the OTEL_EXPORTER_OTLP_* variables and collects every
// malformed one, so New reports them all at once.
type otlpEnv struct {
	getenv func(string) string
	errs   []error
}

// get returns the first of OTEL_EXPORTER_OTLP_TRACES_<name> and
// OTEL_EXPORTER_OTLP_<name> that is set, and its name.
func (env *otlpEnv) get(name string) (key, value string) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_" + name, "OTEL_EXPORTER_OTLP_" + name} {
		if v := strings.TrimSpace(env.getenv(k)); v != "" {
			return k, v
		}
	}
	return "", ""
}

// bad records that variable k's value v is malformed, and why.
func (env *otlpEnv) bad(k, v, why string) {
	env.errs = append(env.errs, fmt.Errorf("%w: %s=%q: %s", ErrConfig, k, v, why))
}

// endpoint is the URL to post spans to, from ENDPOINT and INSECURE.
func (env *otlpEnv) endpoint() string {
	var u *url.URL
	if k, v := env.get("ENDPOINT"); v != "" {
		var err error
		u, err = url.Parse(v)
		switch {
		case err != nil:
			env.bad(k, v, err.Error())
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			env.bad(k, v, "want http(s)://host[:port][/path]")
			u = nil
		case k == "OTEL_EXPORTER_OTLP_ENDPOINT":
			u.Path = path.Join(u.Path, tracesPath)
		case u.Path == "":
			u.Path = "/"
		}
	}
	if u == nil {
		u, _ = url.Parse(DefaultEndpoint)
	}
	if k, v := env.get("INSECURE"); v != "" {
		insecure, err := strconv.ParseBool(v)
		if err != nil {
			env.bad(k, v, "want true or false")
		} else if insecure {
			u.Scheme = "http"
		}
	}
	return u.String()
}

// headers sets the HEADERS entries in h.
func (env *otlpEnv) headers(h http.Header) {
	k, v := env.get("HEADERS")
	if v == "" {
		return
	}
	entries := strings.Split(v, ",")
	for i, kv := range entries {
		name, val, ok := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t\r\n:") {
			// Values are often credentials: an entry that cannot be
			// split is named by its place only.
			env.bad(k, "…", fmt.Sprintf("entry %d of %d: want key=value", i+1, len(entries)))
			continue
		}
		dec, err := url.PathUnescape(val)
		if err != nil {
			env.bad(k, "…", fmt.Sprintf("entry %q: value is not percent-encoded", name))
			continue
		}
		h.Set(name, strings.TrimSpace(dec))
	}
}

// gzip reports whether COMPRESSION asks for gzip.
func (env *otlpEnv) gzip() bool {
	k, v := env.get("COMPRESSION")
	switch v {
	case "gzip":
		return true
	case "", "none":
	default:
		env.bad(k, v, "want gzip or none")
	}
	return false
}

// timeout is TIMEOUT, per export; DefaultTimeout if unset.
func (env *otlpEnv) timeout() time.Duration {
	k, v := env.get("TIMEOUT")
	if v == "" {
		return DefaultTimeout
	}
	ms, err := strconv.Atoi(v)
	if err != nil || ms <= 0 {
		env.bad(k, v, "want a positive number of milliseconds")
		return DefaultTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

// tlsConfig is the TLS configuration for an https endpoint: the CA of
// CERTIFICATE, and the client certificate of CLIENT_CERTIFICATE and
// CLIENT_KEY, which come together or not at all.
func (env *otlpEnv) tlsConfig() *tls.Config {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if k, v := env.get("CERTIFICATE"); v != "" {
		pem, err := os.ReadFile(v)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			env.bad(k, v, err.Error())
		case !pool.AppendCertsFromPEM(pem):
			env.bad(k, v, "no PEM certificate in it")
		default:
			tlsConf.RootCAs = pool
		}
	}
	kc, cert := env.get("CLIENT_CERTIFICATE")
	kk, key := env.get("CLIENT_KEY")
	switch {
	case cert != "" && key != "":
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			env.bad(kc, cert, "with "+kk+": "+err.Error())
		} else {
			tlsConf.Certificates = []tls.Certificate{pair}
		}
	case cert != "":
		env.bad(kc, cert, "needs OTEL_EXPORTER_OTLP_CLIENT_KEY too")
	case key != "":
		env.bad(kk, key, "needs OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE too")
	}
	return tlsConf
}

// newTransport is the exporter's own HTTP transport: a few connections to
// one collector, with the environment's proxy and TLS settings.
func newTransport(tlsConf *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Endpoint is the URL spans are posted to.
func (e *Exporter) Endpoint() string { return e.url }

// ExportSpans sends spans in one request, retrying as the package comment
// says: each attempt within the configured timeout, all of them within
// ctx (the batch processor's, OTEL_BSP_EXPORT_TIMEOUT).
func (e *Exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.shutdown.Load() {
		return ErrShutdown
	}
	if len(spans) == 0 {
		return nil
	}
	body := Marshal(spans)
	if e.gzip {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		if _, err := zw.Write(body); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		body = zb.Bytes()
	}
	start := time.Now()
	var slept time.Duration
	wait := retryInitial
	for {
		err := e.post(ctx, body)
		var re *retryable
		if !errors.As(err, &re) {
			return err
		}
		d := wait/2 + rand.N(wait) // ±50 %
		if re.after > 0 {
			d = re.after
		}
		if max(time.Since(start), slept)+d > retryMaxElapsed {
			return re.err
		}
		if serr := e.sleep(ctx, d); serr != nil {
			return fmt.Errorf("%w (no retry: %v)", re.err, serr)
		}
		slept += d
		if re.after == 0 {
			wait = min(time.Duration(float64(wait)*retryMultiplier), retryMax)
		}
	}
}

// retryable is a failure worth another attempt, with the collector's
// Retry-After when it gave one.
type retryable struct {
	err   error
	after time.Duration
}

func (r *retryable) Error() string { return r.err.Error() }
func (r *retryable) Unwrap() error { return r.err }

func (e *Exporter) post(parent context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(parent, e.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range e.headers {
		req.Header[k] = v
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		err = fmt.Errorf("otlphttp: POST %s: %w", e.url, err)
		var cv *tls.CertificateVerificationError
		var ua x509.UnknownAuthorityError
		var hn x509.HostnameError
		if parent.Err() != nil || errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) {
			return err // cancelled, or a certificate that a retry will not fix
		}
		return &retryable{err: err}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	switch code := resp.StatusCode; {
	case code >= 200 && code <= 299:
		if resp.Header.Get("Content-Type") == "application/x-protobuf" {
			if n, msg := partialSuccess(answer); n != 0 || msg != "" {
				return fmt.Errorf("%w: %d spans rejected: %s", ErrPartialSuccess, n, msg)
			}
		}
		return nil
	case code == http.StatusTooManyRequests, code == http.StatusBadGateway,
		code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout:
		r := &retryable{err: fmt.Errorf("otlphttp: POST %s: %s", e.url, resp.Status)}
		if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s > 0 {
			r.after = time.Duration(s) * time.Second
		}
		return r
	default:
		return fmt.Errorf("otlphttp: POST %s: %s: %s", e.url, resp.Status, summary(answer, resp.Header.Get("Content-Type")))
	}
}

// summary is the start of an error answer: its text, or for a protobuf
// google.rpc.Status its message (field 2).
func summary(b []byte, contentType string) string {
	if contentType == "application/x-protobuf" {
		if msg, ok := stringField(b, 2); ok {
			b = []byte(msg)
		}
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 256 {
		s = s[:256] + "…"
	}
	if s == "" {
		return "(empty answer)"
	}
	return s
}

// partialSuccess reads ExportTraceServiceResponse.partial_success (field
// 1): rejected_spans (1) and error_message (2).
func partialSuccess(b []byte) (int64, string) {
	var ps []byte
	walk(b, func(field, wt int, v uint64, data []byte) {
		if field == 1 && wt == wtBytes {
			ps = data
		}
	})
	var n int64
	var msg string
	walk(ps, func(field, wt int, v uint64, data []byte) {
		switch {
		case field == 1 && wt == wtVarint:
			n = int64(v) //nolint:gosec // int64 on the wire
		case field == 2 && wt == wtBytes:
			msg = string(data)
		}
	})
	return n, msg
}

func stringField(b []byte, want int) (string, bool) {
	var s string
	var ok bool
	walk(b, func(field, wt int, _ uint64, data []byte) {
		if field == want && wt == wtBytes {
			s, ok = string(data), true
		}
	})
	return s, ok
}

// walk calls fn for each top-level field of a protobuf message, stopping
// at the first malformed one.
func walk(b []byte, fn func(field, wt int, v uint64, data []byte)) {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return
		}
		b = b[n:]
		field, wt := int(tag>>3), int(tag&7) //nolint:gosec // small
		switch wt {
		case wtVarint:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return
			}
			fn(field, wt, v, nil)
			b = b[n:]
		case wtFixed64:
			if len(b) < 8 {
				return
			}
			fn(field, wt, binary.LittleEndian.Uint64(b), nil)
			b = b[8:]
		case wtFixed32:
			if len(b) < 4 {
				return
			}
			fn(field, wt, uint64(binary.LittleEndian.Uint32(b)), nil)
			b = b[4:]
		case wtBytes:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return
			}
			fn(field, wt, 0, b[n:n+int(l)]) //nolint:gosec // bounded by len(b)
			b = b[n+int(l):]                //nolint:gosec // bounded by len(b)
		default:
			return
		}
	}
}

// Shutdown stops the exporter: later exports fail with ErrShutdown. What
// is in flight finishes (the batch processor flushes before it shuts the
// exporter down).
func (e *Exporter) Shutdown(context.Context) error {
	e.shutdown.Store(true)
	e.hc.CloseIdleConnections()
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
