package agentapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Defaults for a Client.
const (
	DefaultTimeout   = 10 * time.Second
	DefaultMaxConns  = 64
	DefaultUserAgent = "agentrelay"
)

// drainBudget is how much of a response body the client reads past what it
// keeps, so the connection can be reused. A longer body is abandoned and its
// connection closed: a hostile or broken server cannot make us read without
// limit.
const drainBudget = 16 << 10

// ErrInsecureURL is returned for a plain-http base URL that is not loopback,
// unless AllowInsecureHTTP is set: a bearer token must not cross a network in
// clear text by accident.
var ErrInsecureURL = errors.New("agentapi: base URL must use https")

// ClientOptions configures a Client. The zero value of each field means its
// default.
type ClientOptions struct {
	// Timeout bounds each call, from sending the request to reading the
	// end of the answer. Default DefaultTimeout.
	Timeout time.Duration
	// MaxConns sizes the connection pool: idle connections kept per host.
	// Set it to the number of calls that may be in flight at once.
	// Default DefaultMaxConns.
	MaxConns int
	// UserAgent is sent as User-Agent. Default DefaultUserAgent.
	UserAgent string
	// AllowInsecureHTTP permits a plain-http base URL to a non-loopback host.
	AllowInsecureHTTP bool
	// TLS is the TLS configuration (custom CAs, client certificates).
	// Nil means the system roots. Verification stays on unless the caller
	// sets InsecureSkipVerify itself.
	TLS *tls.Config
	// Transport replaces the HTTP transport entirely (tests, benchmarks);
	// MaxConns and TLS are then ignored.
	Transport http.RoundTripper
}

// Client calls the trigger API. It is safe for concurrent use and holds a
// pool of keep-alive connections; create one per base URL and share it.
type Client struct {
	base string // scheme://host[:port][/prefix], no trailing slash
	hc   *http.Client
	// rt is hc's transport. Trigger calls it directly: http.Client.Do
	// would add nothing here (no redirects are followed, no cookie jar, no
	// client-wide timeout) but a copy of the request's headers for a
	// redirect that never comes, and its redirect loop, on every call. That costs
	// ~1.6 µs and 6 allocations a call, over 1 % of a message's CPU, and
	// building each request with http.NewRequestWithContext instead of
	// from the template another ~1.5 µs and 6 (see BENCHMARKS.md,
	// 2026-11-30). Called directly, the transport does not follow a
	// redirect either: the 3xx is the answer.
	rt http.RoundTripper
	// rtChecked carries the calls with a send check (WithSendCheck): rt,
	// or for an https base URL a transport of its own that speaks only
	// HTTP/1.1, on whose connections the check can be made at the write.
	rtChecked http.RoundTripper
	timeout   time.Duration
	userAgent []string // the User-Agent header value, shared by every request
}

// NewClient returns a client for the API at baseURL (for the public API,
// "https://api.chatgpt.com").
func NewClient(baseURL string, o ClientOptions) (*Client, error) {
	base, err := CheckBaseURL(baseURL, o.AllowInsecureHTTP)
	if err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	rt, rtChecked := o.Transport, o.Transport
	if rt == nil {
		rt = newTransport(o)
		rtChecked = rt // plain http: HTTP/1.1 already
		if strings.HasPrefix(base, "https:") {
			rtChecked = newHTTP1Transport(o)
		}
	}
	return &Client{
		base: base,
		hc: &http.Client{
			Transport: rt,
			// The API never redirects. A redirect means a wrong base URL
			// or a hostile middlebox; following it could carry the token
			// to another host, so the 3xx is returned as an answer.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		rt:        rt,
		rtChecked: rtChecked,
		timeout:   o.Timeout,
		userAgent: []string{o.UserAgent},
	}, nil
}

func newTransport(o ClientOptions) *http.Transport {
	tlsConf := o.TLS
	if tlsConf == nil {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: dialChecked((&net.Dialer{
			Timeout:   min(o.Timeout, 10*time.Second),
			KeepAlive: 30 * time.Second,
		}).DialContext),
		TLSClientConfig:        tlsConf,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    min(o.Timeout, 10*time.Second),
		MaxIdleConns:           o.MaxConns,
		MaxIdleConnsPerHost:    o.MaxConns,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		// Requests and answers are small. Over HTTP/1.1 every call in
		// flight holds a connection with its own read and write buffers,
		// so their size is most of the memory a call costs: 1 KiB holds
		// a typical request (headers and body) and a 202 answer in one
		// piece. A longer header line is read across refills, and a
		// larger body is written past the buffer.
		ReadBufferSize:  1 << 10,
		WriteBufferSize: 1 << 10,
		// Answers are a bodiless 202 or a short JSON error: asking for
		// gzip would only cost a header map per request.
		DisableCompression: true,
	}
}

// CheckBaseURL validates and normalises a base URL: http or https, a host, no
// user info (it would end up in error strings), query or fragment; https
// unless the host is loopback or allowInsecure is set.
func CheckBaseURL(raw string, allowInsecure bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("agentapi: base URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("agentapi: base URL %q: scheme must be https (or http for loopback)", raw)
	case u.Host == "":
		return "", fmt.Errorf("agentapi: base URL %q: missing host", raw)
	case u.User != nil:
		return "", errors.New("agentapi: base URL must not carry user info; use a token source")
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("agentapi: base URL %q: must not have a query or fragment", raw)
	case u.Scheme == "http" && !allowInsecure && !IsLoopback(u.Hostname()):
		return "", fmt.Errorf("%w: %q is plain http to a non-loopback host (set allow_insecure_http to permit it)", ErrInsecureURL, raw)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// IsLoopback reports whether host names this machine: "localhost" or a
// loopback IP address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BaseURL returns the normalised base URL.
func (c *Client) BaseURL() string { return c.base }

// Timeout returns the per-call timeout.
func (c *Client) Timeout() time.Duration { return c.timeout }

// CloseIdleConnections closes pooled connections.
func (c *Client) CloseIdleConnections() {
	c.hc.CloseIdleConnections()
	if t, ok := c.rtChecked.(*http.Transport); ok && c.rtChecked != c.rt {
		t.CloseIdleConnections()
	}
}

// Agent is one trigger endpoint: a Client, a TriggerID and the token source
// allowed to call it.
type Agent struct {
	c      *Client
	id     TriggerID
	url    string
	tokens TokenSource
	// tmpl is the request every call starts from: the URL is parsed once
	// and shared (the transport only reads it).
	tmpl *http.Request
	// auth caches the Authorization header value of the last token seen,
	// so a call builds it only when the token changes.
	auth atomic.Pointer[authHeader]
}

type authHeader struct {
	token string
	value []string
	err   error // the token cannot be sent as a header value
}

// Agent binds the client to a trigger id and token source.
func (c *Client) Agent(id TriggerID, tokens TokenSource) (*Agent, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("%w: empty", ErrInvalidTriggerID)
	}
	if tokens == nil {
		return nil, fmt.Errorf("%w: no token source", ErrNoToken)
	}
	a := &Agent{
		c:  c,
		id: id,
		// The id is validated to [A-Za-z0-9_-], so escaping changes
		// nothing; it is kept as a second guard on the request path.
		url:    c.base + "/v1/workspace_agents/" + url.PathEscape(id.String()) + "/trigger",
		tokens: tokens,
	}
	tmpl, err := http.NewRequest(http.MethodPost, a.url, nil)
	if err != nil {
		return nil, fmt.Errorf("agentapi: trigger URL: %w", err)
	}
	a.tmpl = tmpl
	return a, nil
}

// ID returns the trigger id.
func (a *Agent) ID() TriggerID { return a.id }

// URL returns the trigger URL the agent posts to. It holds no secret.
func (a *Agent) URL() string { return a.url }

// Trigger sends one trigger event. It returns the HTTP status code (0 when
// there was no answer) and nil when the API accepted the event (202, and
// only 202), or an *Error saying what kind of failure it was. Validation failures return an
// *Error of ClassBadRequest without sending anything; a token source that has
// no token, or one that cannot be sent as a header value, gives
// ClassUnauthorized, like a 401 would, without sending anything.
func (a *Agent) Trigger(ctx context.Context, ev Event) (int, error) {
	body, tok, err := a.prepare(ev)
	if err != nil {
		return 0, err
	}
	callCtx, cancel := context.WithTimeout(ctx, a.c.timeout)
	defer cancel()
	rt := a.c.rt
	sendCtx, stopCheck, checked := withSendCheck(ctx, callCtx)
	defer stopCheck()
	if checked {
		rt = a.c.rtChecked
	}
	req := a.newRequest(sendCtx, body)
	a.setHeaders(ctx, req.Header, tok, ev.IdempotencyKey)

	resp, err := rt.RoundTrip(req)
	if err != nil {
		if cause := context.Cause(sendCtx); errors.Is(cause, ErrNotSent) {
			return 0, &Error{TriggerID: a.id, Class: ClassCanceled, Err: safeError(cause, tok)}
		}
		return 0, &Error{TriggerID: a.id, Class: transportClass(ctx, callCtx), Err: safeError(scrubURLError(err), tok)}
	}
	if resp.Body == nil {
		// As http.Client does for RoundTrippers that leave it nil.
		resp.Body = http.NoBody
	}
	// The timeout covers the body too. net/http stops the read of an
	// ordinary body when the context ends, but not every body: after a
	// 101 Switching Protocols the body is the raw connection, which no
	// context watches, and a replacement Transport owes us nothing.
	// Closing the body ends any read of it.
	stop := context.AfterFunc(callCtx, func() { _ = resp.Body.Close() })
	defer stop()
	return resp.StatusCode, a.finish(resp, tok)
}

// injectTraceContext sets traceparent (and tracestate) to the span
// context ctx carries, when it carries a valid one: the call then joins the
// caller's trace. A context without one (tracing off) adds no header and
// costs one context lookup. Baggage is never sent: the API is a third
// party.
func injectTraceContext(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
}

// prepare checks ev, takes the token and encodes the body: what comes
// before a call is made.
func (a *Agent) prepare(ev Event) ([]byte, Secret, error) {
	if err := ev.Validate(); err != nil {
		return nil, Secret{}, &Error{TriggerID: a.id, Class: ClassBadRequest, Err: err}
	}
	tok, err := a.tokens.Token()
	if err != nil {
		return nil, Secret{}, &Error{TriggerID: a.id, Class: ClassUnauthorized, Err: err}
	}
	if _, err := a.authorization(tok.Reveal()); err != nil {
		// net/http would refuse the header before sending anything, with
		// an error like a network failure's; retrying cannot help and the
		// route's calls all fail alike. It is a token problem, as a 401
		// is: nothing is sent, and a source that can re-read does so.
		if inv, ok := a.tokens.(Invalidator); ok {
			inv.Invalidate()
		}
		return nil, Secret{}, &Error{TriggerID: a.id, Class: ClassUnauthorized, Err: fmt.Errorf("%w: the token cannot be sent: %w", ErrNoToken, err)}
	}
	// A fresh buffer every call, never pooled: the transport may still
	// read the body after RoundTrip returns (a server that answers before
	// reading the whole request), so the buffer is not ours to reuse when
	// Trigger returns.
	body, err := ev.Body()
	if err != nil {
		return nil, Secret{}, &Error{TriggerID: a.id, Class: ClassBadRequest, Err: err}
	}
	return body, tok, nil
}

// setHeaders sets a trigger call's headers on h, and the trace context of
// ctx's span if there is one.
func (a *Agent) setHeaders(ctx context.Context, h http.Header, tok Secret, key string) {
	h["Authorization"], _ = a.authorization(tok.Reveal()) // prepare checked it
	h["Content-Type"] = headerJSON
	h["Accept"] = headerJSON
	h["User-Agent"] = a.c.userAgent
	if key != "" {
		h[idempotencyKeyField] = []string{key}
	}
	injectTraceContext(ctx, h)
}

// idempotencyKeyField is the Idempotency-Key header, spelled so that
// net/http does not take the request for one it may send again on its own.
// For a request with an "Idempotency-Key" entry in its header map,
// http.Transport sends the POST a second time, at once, when a reused
// connection breaks after the request was written (Request.isReplayable).
// That call would be invisible to the worker's retry policy, breaker,
// metrics and logs, and behind a proxy that reset the connection while the
// API still works on the first one, it is a second call of the same event,
// and of its conversation, at the same time. Header names are
// case-insensitive (RFC 9110, 5.1; HTTP/2 sends them in lower case anyway),
// so the API reads the same header. Retries the Transport makes when
// nothing was written, and HTTP/2's when the server refused the stream,
// stay: the API never saw those requests.
const idempotencyKeyField = "idempotency-key"

// headerJSON is the Content-Type and Accept value. Header value slices are
// shared by every request: the transport only reads them.
var headerJSON = []string{"application/json"}

// newRequest is what http.NewRequestWithContext(ctx, POST, a.url,
// bytes.NewReader(body)) returns, without parsing the URL again.
// (Parsing it and setting the headers one by one cost ~1.5 µs and 6
// allocations a call; see BENCHMARKS.md, 2026-11-30.)
func (a *Agent) newRequest(ctx context.Context, body []byte) *http.Request {
	req := a.tmpl.WithContext(ctx)    // a shallow copy
	req.Header = make(http.Header, 7) // 5, and room for traceparent and tracestate in the same map group
	req.ContentLength = int64(len(body))
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	return req
}

// authorization returns the Authorization header value for token, or why
// token cannot be sent in one (CheckHeaderValue). Both are kept for the
// last token seen, so the check runs once per token, not once per call.
func (a *Agent) authorization(token string) ([]string, error) {
	if h := a.auth.Load(); h != nil && h.token == token {
		return h.value, h.err
	}
	h := &authHeader{token: token}
	if h.err = CheckHeaderValue(token); h.err == nil {
		h.value = []string{"Bearer " + token}
	}
	a.auth.Store(h)
	return h.value, h.err
}

// finish reads what is worth keeping of the answer and classifies it.
func (a *Agent) finish(resp *http.Response, tok Secret) error {
	defer resp.Body.Close()
	class := ClassOf(resp.StatusCode)
	if class == ClassAccepted {
		// 202 has no body; drain whatever is there so the connection is
		// reused. An error here does not undo the acceptance.
		_, _ = io.CopyN(io.Discard, resp.Body, drainBudget)
		return nil
	}
	if class == ClassUnauthorized {
		if inv, ok := a.tokens.(Invalidator); ok {
			inv.Invalidate()
		}
	}
	sc := newScrubber(tok)
	e := &Error{TriggerID: a.id, Class: class, StatusCode: resp.StatusCode, Status: sanitize(sc.scrub(resp.Status), maxStatusText)}
	if resp.StatusCode < 200 {
		// An informational status as the final answer (net/http returns
		// only 101 so): no body belongs to it, and after a 101 what
		// follows is another protocol on the connection. Hang up.
		return e
	}
	if ra, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = ra
	}
	// Keep the start of the body for diagnostics. A body that stops early
	// or too slowly still leaves a complete answer: the status decides.
	buf := make([]byte, MaxErrorBody)
	n, err := io.ReadFull(resp.Body, buf)
	e.Body = summarize(buf[:n], sc)
	if err == nil {
		_, _ = io.CopyN(io.Discard, resp.Body, drainBudget)
	}
	return e
}

// transportClass tells a timeout from a cancellation from any other
// transport failure.
func transportClass(parent, call context.Context) Class {
	switch {
	case errors.Is(parent.Err(), context.Canceled):
		return ClassCanceled
	case call.Err() != nil:
		return ClassTimeout
	default:
		return ClassNetwork
	}
}

// scrubURLError drops the URL from a *url.Error: the URL carries no secret,
// but it is long and the trigger id is already in the Error.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
