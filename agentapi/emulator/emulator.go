// Package emulator is an in-process emulator of the Workspace Agents trigger
// API, POST {base}/v1/workspace_agents/{id}/trigger. It follows the public
// contract (bearer auth, 202 Accepted with no body, 401/403/404/409 errors,
// Idempotency-Key replays). It also injects faults: latency, 5xx, 429,
// requests that hang, and connections dropped after the event was accepted.
//
// The project's tests, the dev mode, the "agentrelay emulator" subcommand,
// the fault-injection suite and the benchmarks all use it. So it is safe for
// concurrent use, and a request costs no goroutine beyond net/http's own and
// no scan proportional to the ledger or the configuration.
//
// An Emulator is an http.Handler. Listen serves it over HTTP/1.1 on a real
// socket. The hang and drop faults need a connection that can be hijacked,
// which HTTP/1.1 provides.
//
// # Request handling order
//
// The order is part of the emulation. Tests rely on it, e.g. an outage is
// answered before authentication.
//
//  1. Routing. Only POST /v1/workspace_agents/{id}/trigger exists, where
//     {id} is one non-empty path segment. Other paths get 404. Other methods
//     on that path get 405 with "Allow: POST".
//  2. Latency (Faults.Latency plus jitter). The request's context cancels
//     it. The body is read into a buffer before this step, but it is judged
//     only at step 7. Reading it early is what lets net/http notice that the
//     client went away during the delay or a hang.
//  3. Faults. A fault tied to the input (Faults.ByInput: the body holds its
//     marker) comes first; then the first scripted fault that matches the
//     trigger id; if none matches, a probabilistic fault is drawn. server_error,
//     rate_limit and hang take effect here, before authentication.
//     drop_after_accept is remembered until step 10. If the request is not
//     accepted, it gets its normal answer and the fault is spent.
//  4. Authentication. A missing Authorization header, a scheme other than
//     Bearer (matched case-insensitively), or an unknown or revoked token gets
//     401 with "WWW-Authenticate: Bearer".
//  5. An unknown trigger id gets 404. So does an id that does not match
//     ^agtch_[A-Za-z0-9_-]{1,128}$.
//  6. A token without permission for the id gets 403.
//  7. The body. Content-Type must be application/json (parameters allowed),
//     or the answer is 400. A body over 1 MiB gets 413. It must also be valid
//     UTF-8 and a JSON object. "input" must be a non-empty string, and
//     "conversation_key" must be absent, null or a string. Unknown fields are
//     ignored, and field names are matched exactly (case-sensitively).
//     Anything else gets 400.
//  8. Idempotency. If the Idempotency-Key header is non-empty and (id, key)
//     was already accepted, the answer is 202 and nothing is enqueued. This
//     is a replay. It comes before the runnable check, so a retry still gets
//     its original outcome after the channel stops being runnable.
//  9. A trigger that is not runnable gets 409.
//  10. Accept. The event is appended to the ledger and (id, key) is
//     remembered, in one critical section. The answer is 202 Accepted with
//     Content-Length: 0. Under drop_after_accept the bookkeeping is done and
//     then the connection is closed without a response.
//
// Error answers (400, 401, 403, 404, 405, 409, 413, 429) carry a small JSON
// body {"error":{"message":"..."}}. Injected 5xx answers carry a short text
// body, like a load balancer would send.
package emulator

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// MaxBodyBytes is the largest request body accepted. A larger one gets
	// 413 Request Entity Too Large.
	MaxBodyBytes = 1 << 20

	// DefaultHangFor bounds a hang when Faults.HangFor is zero.
	DefaultHangFor = 5 * time.Minute

	// DefaultRequestLogSize is how many recent requests Requests keeps unless
	// WithRequestLog says otherwise.
	DefaultRequestLogSize = 1024

	// Redacted replaces the credential in the Authorization headers kept by
	// Requests. The scheme is kept, e.g. "Bearer REDACTED".
	Redacted = "REDACTED"
)

// Emulator is an in-memory Workspace Agents trigger API. It implements
// http.Handler. Create it with New. Every method is safe for concurrent use.
type Emulator struct {
	now    func() time.Time
	logger *slog.Logger

	// authMu guards tokens, revoked and triggers. The hot path only
	// RLocks it.
	authMu   sync.RWMutex
	tokens   map[string]*grant
	revoked  map[string]struct{}
	triggers map[string]*trigger

	faults atomic.Pointer[faultState]

	scriptMu sync.Mutex
	script   []Fault
	// scriptLen mirrors len(script). When no script is queued, requests
	// skip scriptMu.
	scriptLen atomic.Int64

	// ledgerMu makes the idempotency check and the ledger append one atomic
	// step.
	ledgerMu sync.Mutex
	ledger   []Event
	keys     map[idemKey]struct{}
	// ledgerGrew is closed on the next append. It is nil unless
	// WaitLedgerLen is waiting, so appends pay nothing when nobody waits.
	ledgerGrew chan struct{}

	stats counters
	log   requestLog
	bufs  sync.Pool // *bodyBuf
}

// grant is what a token may do.
type grant struct {
	any bool                // "*": every trigger id
	ids map[string]struct{} // otherwise, only these
}

// trigger is a registered trigger id. The id string is shared by every
// ledger entry for the trigger, instead of each entry keeping a copy of the
// request path.
type trigger struct {
	id       string
	runnable atomic.Bool
}

type idemKey struct{ triggerID, key string }

// Option configures an Emulator in New.
type Option func(*Emulator)

// WithToken registers token as a valid access token. It may trigger the
// listed ids, or every id if one of them is "*". Calling it again for the
// same token adds ids. A token with no ids is valid, but every request with
// it gets 403.
func WithToken(token string, triggerIDs ...string) Option {
	return func(e *Emulator) { e.AddToken(token, triggerIDs...) }
}

// WithTrigger registers a trigger id. Ids never registered get 404.
func WithTrigger(id string, runnable bool) Option {
	return func(e *Emulator) { e.AddTrigger(id, runnable) }
}

// WithFaults sets the probabilistic faults and the latency. See SetFaults.
func WithFaults(f Faults) Option {
	return func(e *Emulator) { e.SetFaults(f) }
}

// WithClock replaces time.Now as the source of Event.AcceptedAt and
// Request.Time. Latency, jitter and hang durations still use real timers,
// because they act on real connections. A nil now is ignored.
func WithClock(now func() time.Time) Option {
	return func(e *Emulator) {
		if now != nil {
			e.now = now
		}
	}
}

// WithRequestLog sets how many recent requests Requests keeps. The default
// is DefaultRequestLogSize. n <= 0 turns the log off, which also saves the
// per-request header copy in benchmarks.
func WithRequestLog(n int) Option {
	return func(e *Emulator) { e.log.resize(n) }
}

// WithLogger logs one Info record per finished request, and logs the
// listening server's errors at Warn. The default is no logging.
func WithLogger(l *slog.Logger) Option {
	return func(e *Emulator) { e.logger = l }
}

// New returns an Emulator with no tokens, no triggers and no faults, changed
// by opts.
func New(opts ...Option) *Emulator {
	e := &Emulator{
		now:      time.Now,
		tokens:   make(map[string]*grant),
		revoked:  make(map[string]struct{}),
		triggers: make(map[string]*trigger),
		keys:     make(map[idemKey]struct{}),
		bufs:     sync.Pool{New: func() any { return new(bodyBuf) }},
	}
	e.log.resize(DefaultRequestLogSize)
	e.faults.Store(newFaultState(Faults{}))
	for _, opt := range opts {
		if opt != nil {
			opt(e)
		}
	}
	return e
}

// AddToken registers token, or re-enables it if it was revoked. It adds
// triggerIDs to what the token may trigger ("*" means every id). The empty
// token is ignored, because "Bearer " with nothing after it is always 401.
func (e *Emulator) AddToken(token string, triggerIDs ...string) {
	if token == "" {
		return
	}
	e.authMu.Lock()
	defer e.authMu.Unlock()
	delete(e.revoked, token)
	g := e.tokens[token]
	if g == nil {
		g = &grant{ids: make(map[string]struct{})}
		e.tokens[token] = g
	}
	for _, id := range triggerIDs {
		if id == "*" {
			g.any = true
			continue
		}
		g.ids[id] = struct{}{}
	}
}

// RevokeToken makes token invalid: later requests with it get 401. AddToken
// re-enables it with no permissions from before.
func (e *Emulator) RevokeToken(token string) {
	e.authMu.Lock()
	defer e.authMu.Unlock()
	delete(e.tokens, token)
	e.revoked[token] = struct{}{}
}

// AddTrigger registers a trigger id, or sets its runnable state if it is
// already registered. An id that fails ValidTriggerID is stored, but requests
// can never reach it: the API answers 404 for malformed ids.
func (e *Emulator) AddTrigger(id string, runnable bool) {
	e.authMu.Lock()
	defer e.authMu.Unlock()
	t := e.triggers[id]
	if t == nil {
		t = &trigger{id: id}
		e.triggers[id] = t
	}
	t.runnable.Store(runnable)
}

// RemoveTrigger unregisters id, so later requests for it get 404. Its ledger
// entries and idempotency keys stay.
func (e *Emulator) RemoveTrigger(id string) {
	e.authMu.Lock()
	defer e.authMu.Unlock()
	delete(e.triggers, id)
}

// SetRunnable changes whether a registered trigger accepts events. Requests
// for a trigger that is not runnable get 409. Unknown ids are ignored. Use
// AddTrigger to register an id.
func (e *Emulator) SetRunnable(id string, runnable bool) {
	e.authMu.RLock()
	t := e.triggers[id]
	e.authMu.RUnlock()
	if t != nil {
		t.runnable.Store(runnable)
	}
}

// ValidTriggerID reports whether id has the public form of a trigger id:
// "agtch_" followed by 1 to 128 letters, digits, '_' or '-'.
func ValidTriggerID(id string) bool {
	const prefix = "agtch_"
	if len(id) <= len(prefix) || len(id) > len(prefix)+128 || id[:len(prefix)] != prefix {
		return false
	}
	for i := len(prefix); i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Event is a trigger event that the emulator accepted (enqueued).
type Event struct {
	Seq             uint64 // 1-based acceptance order
	TriggerID       string
	IdempotencyKey  string // "" when the header was absent or empty
	Input           string
	ConversationKey string // "" when absent or null
	AcceptedAt      time.Time
	// Dropped is true when the event was accepted and the connection was then
	// closed before a response (fault drop_after_accept).
	Dropped bool
}

// Ledger returns a copy of the accepted events in acceptance order. Events
// whose connection was dropped are included.
func (e *Emulator) Ledger() []Event {
	e.ledgerMu.Lock()
	defer e.ledgerMu.Unlock()
	return slices.Clone(e.ledger)
}

// LedgerLen returns the number of accepted events.
func (e *Emulator) LedgerLen() int {
	e.ledgerMu.Lock()
	defer e.ledgerMu.Unlock()
	return len(e.ledger)
}

// WaitLedgerLen blocks until the ledger holds at least n events, or ctx is
// done, in which case it returns ctx.Err(). Tests use it to wait for the
// worker without sleeping.
func (e *Emulator) WaitLedgerLen(ctx context.Context, n int) error {
	for {
		e.ledgerMu.Lock()
		if len(e.ledger) >= n {
			e.ledgerMu.Unlock()
			return nil
		}
		if e.ledgerGrew == nil {
			e.ledgerGrew = make(chan struct{})
		}
		grew := e.ledgerGrew
		e.ledgerMu.Unlock()
		select {
		case <-grew:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Accepted counts the ledger events for (triggerID, idempotencyKey). For a
// non-empty key the answer is 0 or 1, unless idempotency is broken: it
// counts the ledger, not the idempotency map, so it can catch such a bug.
// With key "" it counts the trigger's events sent without a key. It scans the
// ledger, which is fine for assertions but too slow for a hot path.
func (e *Emulator) Accepted(triggerID, idempotencyKey string) int {
	e.ledgerMu.Lock()
	defer e.ledgerMu.Unlock()
	n := 0
	for i := range e.ledger {
		if e.ledger[i].TriggerID == triggerID && e.ledger[i].IdempotencyKey == idempotencyKey {
			n++
		}
	}
	return n
}

// Reset clears the ledger, the idempotency keys, the statistics, the fault
// script and the request log. Tokens, triggers and Faults stay. Sequence
// numbers start again at 1.
func (e *Emulator) Reset() {
	e.ledgerMu.Lock()
	e.ledger = nil
	clear(e.keys)
	e.ledgerMu.Unlock()

	e.scriptMu.Lock()
	e.script = nil
	e.scriptLen.Store(0)
	e.scriptMu.Unlock()

	e.stats.reset()
	e.log.reset()
}

// enqueueResult is the outcome of steps 8 to 10.
type enqueueResult int

const (
	enqueued enqueueResult = iota
	replayed
	notRunnable
)

// enqueue does steps 8 to 10 under one lock. Two concurrent requests with
// the same (id, key) therefore cannot both enqueue.
func (e *Emulator) enqueue(t *trigger, key string, body triggerBody, dropped bool) enqueueResult {
	e.ledgerMu.Lock()
	defer e.ledgerMu.Unlock()
	k := idemKey{t.id, key}
	if key != "" {
		if _, seen := e.keys[k]; seen {
			return replayed
		}
	}
	if !t.runnable.Load() {
		return notRunnable
	}
	e.ledger = append(e.ledger, Event{
		Seq:             uint64(len(e.ledger)) + 1,
		TriggerID:       t.id,
		IdempotencyKey:  key,
		Input:           body.input,
		ConversationKey: body.conversationKey,
		AcceptedAt:      e.now(),
		Dropped:         dropped,
	})
	if key != "" {
		e.keys[k] = struct{}{}
	}
	if e.ledgerGrew != nil {
		close(e.ledgerGrew)
		e.ledgerGrew = nil
	}
	return enqueued
}

// Stats is a snapshot of the emulator's counters. The counters are read one
// by one, so a snapshot taken while requests are in flight need not be
// consistent across fields.
type Stats struct {
	Requests uint64         // requests received, on any path
	ByStatus map[int]uint64 // responses written, by status code
	Accepted uint64         // events enqueued, including dropped ones
	// Replays counts 202 answers from the idempotency map, with no enqueue.
	Replays uint64
	Faults  map[FaultKind]uint64 // faults that took effect, by kind
	// Dropped counts connections closed without a response after an accept
	// (drop_after_accept).
	Dropped uint64
	Hangs   uint64 // hangs started
	// Canceled counts requests whose context ended during the latency delay
	// (client gone or server closed). No response was written.
	Canceled uint64
}

// Stats returns the current counters.
func (e *Emulator) Stats() Stats { return e.stats.snapshot() }

// Request is one entry in the recent-request log.
type Request struct {
	Time      time.Time // arrival, from the emulator's clock
	Method    string
	Path      string
	TriggerID string // the {id} segment; "" when the path is not the trigger route
	// Header is a copy of the request headers. Authorization values keep
	// their scheme, and the credential is replaced by Redacted.
	Header http.Header
	Status int       // status code written; 0 when none was (hang, drop, client gone)
	Fault  FaultKind // the fault that took effect on this request, if any
	Replay bool      // a 202 answered from the idempotency map
	// Duration runs from arrival until the answer was decided. It includes
	// latency and hang time.
	Duration time.Duration
}

// Requests returns the most recent requests, oldest first. A request is
// logged before its response is written, so a client that got a response
// always finds its request here. For a hang, the entry is logged when the
// hang ends.
func (e *Emulator) Requests() []Request { return e.log.snapshot() }

// counters are the lock-free statistics.
type counters struct {
	requests, accepted, replays, dropped, hangs, canceled atomic.Uint64
	status                                                [1000]atomic.Uint64 // index = status code
	faults                                                [len(faultKinds{})]atomic.Uint64
}

// faultKinds lists the kinds counted in Stats.Faults. The order gives the
// index into counters.faults. It is a type, not a package variable, so the
// package keeps no global state.
type faultKinds [4]FaultKind

func countedFaultKinds() faultKinds {
	return faultKinds{FaultServerError, FaultRateLimit, FaultHang, FaultDropAfterAccept}
}

func (c *counters) fault(k FaultKind) {
	kinds := countedFaultKinds()
	if i := slices.Index(kinds[:], k); i >= 0 {
		c.faults[i].Add(1)
	}
}

func (c *counters) statusCode(code int) {
	if code >= 0 && code < len(c.status) {
		c.status[code].Add(1)
	}
}

func (c *counters) reset() {
	for _, a := range []*atomic.Uint64{&c.requests, &c.accepted, &c.replays, &c.dropped, &c.hangs, &c.canceled} {
		a.Store(0)
	}
	for i := range c.status {
		c.status[i].Store(0)
	}
	for i := range c.faults {
		c.faults[i].Store(0)
	}
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Requests: c.requests.Load(),
		ByStatus: make(map[int]uint64),
		Accepted: c.accepted.Load(),
		Replays:  c.replays.Load(),
		Faults:   make(map[FaultKind]uint64),
		Dropped:  c.dropped.Load(),
		Hangs:    c.hangs.Load(),
		Canceled: c.canceled.Load(),
	}
	for code := range c.status {
		if n := c.status[code].Load(); n > 0 {
			s.ByStatus[code] = n
		}
	}
	for i, k := range countedFaultKinds() {
		if n := c.faults[i].Load(); n > 0 {
			s.Faults[k] = n
		}
	}
	return s
}

// requestLog is a ring buffer of the last len(buf) requests.
type requestLog struct {
	// size is len(buf). Only resize writes it, and resize runs only inside
	// New, before the Emulator is shared. So the hot path reads it without
	// the lock.
	size int

	mu   sync.Mutex
	buf  []Request
	next int // index of the next write
	full bool
}

func (l *requestLog) enabled() bool { return l.size > 0 }

func (l *requestLog) resize(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.size = max(n, 0)
	l.buf = make([]Request, l.size)
	l.next, l.full = 0, false
}

func (l *requestLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.buf)
	l.next, l.full = 0, false
}

func (l *requestLog) add(r *Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) == 0 {
		return
	}
	l.buf[l.next] = *r
	l.next++
	if l.next == len(l.buf) {
		l.next, l.full = 0, true
	}
}

func (l *requestLog) snapshot() []Request {
	l.mu.Lock()
	var out []Request
	if l.full {
		out = append(slices.Clone(l.buf[l.next:]), l.buf[:l.next]...)
	} else {
		out = slices.Clone(l.buf[:l.next])
	}
	l.mu.Unlock()
	// The stored headers are never changed after logging. They are cloned
	// anyway, so a caller that edits its copy cannot affect other callers.
	for i := range out {
		out[i].Header = out[i].Header.Clone()
	}
	return out
}
