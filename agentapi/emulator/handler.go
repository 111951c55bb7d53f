package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	routePrefix = "/v1/workspace_agents/"
	routeSuffix = "/trigger"
)

// ServeHTTP answers one request. The package doc lists the steps in order.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	e.stats.requests.Add(1)
	rec := Request{Time: e.now(), Method: r.Method, Path: r.URL.Path}
	if e.log.enabled() {
		rec.Header = redactedHeader(r.Header)
	}
	x := exchange{e: e, w: w, rec: &rec, start: start}

	// 1. Routing.
	id, ok := triggerIDFromPath(r.URL.Path)
	if !ok {
		x.replyError(http.StatusNotFound, "no such route")
		return
	}
	rec.TriggerID = id
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		x.replyError(http.StatusMethodNotAllowed, "method not allowed; use POST")
		return
	}

	// The body is read now but judged at step 7 (see the package doc).
	body := e.bufs.Get().(*bodyBuf)
	defer e.putBody(body)
	tooLarge, readErr := body.read(r)

	// 2. Latency.
	fs := e.faults.Load()
	if !sleep(r.Context(), fs.delay()) {
		e.stats.canceled.Add(1)
		x.finish(0)
		return
	}

	// 3. Faults. Outages come before authentication.
	fault := e.nextFault(id, body.buf.Bytes(), fs)
	if x.injectOutage(r, fault, fs.HangFor) {
		return
	}

	// 4-6. Authentication, existence, permission.
	trig, status, msg := e.authorize(r.Header.Get("Authorization"), id)
	if status != 0 {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", "Bearer")
		}
		x.replyError(status, msg)
		return
	}

	// 7. Body.
	tb, status, msg := parseBody(r.Header.Get("Content-Type"), body.buf.Bytes(), tooLarge, readErr)
	if status != 0 {
		x.replyError(status, msg)
		return
	}

	// 8-10. Idempotency, runnable, accept.
	x.accept(trig, r.Header.Get("Idempotency-Key"), tb, fault.Kind == FaultDropAfterAccept)
}

// injectOutage carries out step 3 for the faults that answer before
// authentication (server_error, rate_limit, hang) and reports whether the
// request has been answered. FaultNone and FaultDropAfterAccept let the
// request go on: a drop takes effect at step 10, and only if the request is
// accepted.
func (x *exchange) injectOutage(r *http.Request, fault Fault, hangFor time.Duration) (answered bool) {
	switch fault.Kind {
	case FaultNone, FaultDropAfterAccept:
		return false
	case FaultRateLimit:
		x.injectRateLimit(fault)
	case FaultHang:
		x.hang(r, hangFor)
	default:
		x.injectServerError(fault)
	}
	return true
}

// accept carries out steps 8-10 for an authorized request with a valid body:
// a replay of an accepted (id, key) gets 202 again, a trigger that is not
// runnable gets 409, and otherwise the event is enqueued and answered 202 -
// or, under drop_after_accept, the connection is closed without an answer.
func (x *exchange) accept(trig *trigger, idempotencyKey string, tb triggerBody, drop bool) {
	e := x.e
	switch e.enqueue(trig, idempotencyKey, tb, drop) {
	case replayed:
		e.stats.replays.Add(1)
		x.rec.Replay = true
		x.replyAccepted()
	case notRunnable:
		x.replyError(http.StatusConflict, "the workspace agent trigger is not in a runnable state")
	case enqueued:
		e.stats.accepted.Add(1)
		if drop {
			e.stats.dropped.Add(1)
			e.stats.fault(FaultDropAfterAccept)
			x.rec.Fault = FaultDropAfterAccept
			x.finish(0)
			closeWithoutResponse(x.w)
			return
		}
		x.replyAccepted()
	}
}

// exchange carries one request's response writer and log entry through the
// helpers below.
type exchange struct {
	e     *Emulator
	w     http.ResponseWriter
	rec   *Request
	start time.Time
}

// finish records the outcome in the statistics, the request log and the
// logger. It runs before any response byte is written. So a client that has
// its answer always sees consistent Stats, Ledger and Requests.
func (x *exchange) finish(status int) {
	x.rec.Status = status
	x.rec.Duration = time.Since(x.start)
	if status != 0 {
		x.e.stats.statusCode(status)
	}
	x.e.log.add(x.rec)
	if l := x.e.logger; l != nil {
		l.LogAttrs(context.Background(), slog.LevelInfo, "emulator request",
			slog.String("method", x.rec.Method),
			slog.String("path", x.rec.Path),
			slog.Int("status", status),
			slog.String("fault", string(x.rec.Fault)),
			slog.Bool("replay", x.rec.Replay),
			slog.Duration("duration", x.rec.Duration),
		)
	}
}

func (x *exchange) reply(status int, contentType string, body []byte) {
	x.finish(status)
	h := x.w.Header()
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.w.WriteHeader(status)
	if len(body) > 0 {
		// A write error means the client is gone, and there is nobody
		// to tell.
		_, _ = x.w.Write(body)
	}
}

// replyAccepted sends the API's only success answer: 202 with an empty body.
func (x *exchange) replyAccepted() { x.reply(http.StatusAccepted, "", nil) }

// apiError is the JSON error body: {"error":{"message":"..."}}.
type apiError struct {
	Error struct {
		Message string `json:"message"`
	} `json:"error"`
}

func (x *exchange) replyError(status int, msg string) {
	var body apiError
	body.Error.Message = msg
	b, err := json.Marshal(body)
	if err != nil {
		// A struct holding one string always marshals. Fall back to no body
		// rather than panic.
		b = nil
	}
	x.reply(status, "application/json", b)
}

func (x *exchange) injectServerError(f Fault) {
	status := f.Status
	if status < 200 || status > 999 {
		status = http.StatusServiceUnavailable
	}
	text := http.StatusText(status)
	if f.Kind != FaultServerError {
		// An unknown kind is a bug in the test. Say so in the response.
		status = http.StatusInternalServerError
		text = "emulator: unknown fault kind " + strconv.Quote(string(f.Kind))
	}
	if text == "" {
		text = "emulated server error"
	}
	if f.RetryAfter != "" {
		x.w.Header().Set("Retry-After", f.RetryAfter)
	}
	x.e.stats.fault(FaultServerError)
	x.rec.Fault = FaultServerError
	x.reply(status, "text/plain; charset=utf-8", []byte(text+"\n"))
}

func (x *exchange) injectRateLimit(f Fault) {
	retryAfter := f.RetryAfter
	if retryAfter == "" {
		retryAfter = "1"
	}
	x.w.Header().Set("Retry-After", retryAfter)
	x.e.stats.fault(FaultRateLimit)
	x.rec.Fault = FaultRateLimit
	x.replyError(http.StatusTooManyRequests, "rate limit exceeded; retry later")
}

// hang holds the request, with no answer, until the client goes away, the
// server closes (Server cancels the base context of every request), or
// hangFor elapses. Then it closes the connection. ServeHTTP has already read
// the body to EOF (unless it was over the limit). That starts net/http's
// background read of the connection, which notices a client that hangs up
// and cancels the request context.
func (x *exchange) hang(r *http.Request, hangFor time.Duration) {
	x.e.stats.hangs.Add(1)
	x.e.stats.fault(FaultHang)
	x.rec.Fault = FaultHang
	t := time.NewTimer(hangFor)
	select {
	case <-r.Context().Done():
	case <-t.C:
	}
	t.Stop()
	x.finish(0)
	closeWithoutResponse(x.w)
}

// closeWithoutResponse closes the client connection without writing a byte.
// A client sees the same when a server or proxy dies mid-request.
func closeWithoutResponse(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	switch {
	case err == nil:
		// The connection is discarded either way. A Close error changes
		// nothing for the client.
		_ = conn.Close()
	case errors.Is(err, http.ErrNotSupported):
		// This writer cannot be hijacked (HTTP/2, or a recorder). Panicking
		// with ErrAbortHandler is net/http's documented way to abort a
		// response without writing it. It is not error handling, and the
		// server does not log it. Listen always serves HTTP/1.1, so
		// Listen never gets here.
		panic(http.ErrAbortHandler)
	default:
		// The connection is already unusable (e.g. the server closed it),
		// so the client has already lost it.
	}
}

// authorize does steps 4 to 6. On success it returns the registered trigger
// and status 0.
func (e *Emulator) authorize(authorization, id string) (t *trigger, status int, msg string) {
	token, ok := bearerToken(authorization)
	if !ok {
		return nil, http.StatusUnauthorized, "missing or malformed bearer credential"
	}
	e.authMu.RLock()
	defer e.authMu.RUnlock()
	g := e.tokens[token]
	if g == nil {
		if _, revoked := e.revoked[token]; revoked {
			return nil, http.StatusUnauthorized, "the access token has been revoked"
		}
		return nil, http.StatusUnauthorized, "invalid access token"
	}
	t = e.triggers[id]
	if t == nil || !ValidTriggerID(id) {
		return nil, http.StatusNotFound, "workspace agent trigger not found"
	}
	if !g.any {
		if _, allowed := g.ids[id]; !allowed {
			return nil, http.StatusForbidden, "the access token may not trigger this workspace agent"
		}
	}
	return t, 0, ""
}

// bearerToken takes the credential from an Authorization value of the form
// "Bearer <token>", with the scheme matched case-insensitively.
func bearerToken(authorization string) (string, bool) {
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	return token, token != ""
}

// triggerIDFromPath returns {id} from /v1/workspace_agents/{id}/trigger. {id}
// must be one non-empty segment. ok is false for any other path.
func triggerIDFromPath(path string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(path, routePrefix)
	if !ok {
		return "", false
	}
	id, ok = strings.CutSuffix(rest, routeSuffix)
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}

// bodyBuf is a pooled buffer for request bodies. The LimitedReader lives in
// it too, so reading a body costs no allocation once the pool is warm.
type bodyBuf struct {
	buf bytes.Buffer
	lr  io.LimitedReader
}

// read reads at most MaxBodyBytes+1 bytes of r's body. One byte more than
// the limit is enough to tell an over-limit body from one exactly at it.
// tooLarge reports a body over the limit. err reports a failed read (client
// gone mid-body).
func (b *bodyBuf) read(r *http.Request) (tooLarge bool, err error) {
	if r.ContentLength > MaxBodyBytes {
		return true, nil
	}
	b.lr = io.LimitedReader{R: r.Body, N: MaxBodyBytes + 1}
	_, err = b.buf.ReadFrom(&b.lr)
	b.lr.R = nil // do not keep the request alive from the pool
	return b.buf.Len() > MaxBodyBytes, err
}

// putBody returns b to the pool. A buffer that grew to hold a large body is
// dropped instead, so one big request does not pin a megabyte per P.
func (e *Emulator) putBody(b *bodyBuf) {
	if b.buf.Cap() > 64<<10 {
		return
	}
	b.buf.Reset()
	e.bufs.Put(b)
}

// triggerBody is the accepted request body.
type triggerBody struct {
	input           string
	conversationKey string
}

// parseBody does step 7. It returns status 0 when the body is acceptable.
func parseBody(contentType string, body []byte, tooLarge bool, readErr error) (tb triggerBody, status int, msg string) {
	mediaType, _, _ := strings.Cut(contentType, ";")
	if !strings.EqualFold(strings.TrimSpace(mediaType), "application/json") {
		return tb, http.StatusBadRequest, "Content-Type must be application/json"
	}
	if tooLarge {
		return tb, http.StatusRequestEntityTooLarge, "request body exceeds 1 MiB"
	}
	if readErr != nil {
		return tb, http.StatusBadRequest, "could not read the request body"
	}
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD. So check
	// first.
	if !utf8.Valid(body) {
		return tb, http.StatusBadRequest, "request body is not valid UTF-8"
	}
	if !json.Valid(body) {
		return tb, http.StatusBadRequest, "request body is not valid JSON"
	}
	input, convKey, isObject := topLevelFields(body)
	if !isObject {
		return tb, http.StatusBadRequest, "request body must be a JSON object"
	}
	if len(input) == 0 || input[0] != '"' {
		return tb, http.StatusBadRequest, "input is required and must be a non-empty string"
	}
	if tb.input = jsonString(input); tb.input == "" {
		return tb, http.StatusBadRequest, "input is required and must be a non-empty string"
	}
	switch {
	case len(convKey) == 0 || string(convKey) == "null":
	case convKey[0] == '"':
		tb.conversationKey = jsonString(convKey)
	default:
		return tb, http.StatusBadRequest, "conversation_key must be a string"
	}
	return tb, 0, ""
}

// topLevelFields returns the raw values of "input" and "conversation_key" in
// a JSON object. A missing field gives nil, and a repeated one gives its last
// value, as in encoding/json. Field names are matched exactly, as the API
// does. encoding/json matches struct fields case-insensitively, and
// decoding into a map costs about a dozen allocations per request. Hence
// this scanner, which allocates nothing unless a name has escapes. body
// must already be valid JSON (json.Valid), so it only needs to find
// boundaries, not check syntax. FuzzParseBody checks it against
// encoding/json.
func topLevelFields(body []byte) (input, conversationKey []byte, isObject bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, nil, false
	}
	i++
	for {
		i = skipSpace(body, i)
		if body[i] == '}' {
			return input, conversationKey, true
		}
		keyEnd := skipValue(body, i) // a key is a string
		name := body[i+1 : keyEnd-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			// An escaped name ("\u0069nput" is "input"). This is rare, so
			// paying an allocation to decode it is fine.
			name = []byte(jsonString(body[i:keyEnd]))
		}
		i = skipSpace(body, keyEnd)
		i = skipSpace(body, i+1) // past ':'
		valEnd := skipValue(body, i)
		// The compiler does not allocate for a string(bytes) switch.
		switch string(name) {
		case "input":
			input = body[i:valEnd]
		case "conversation_key":
			conversationKey = body[i:valEnd]
		}
		i = skipSpace(body, valEnd)
		if body[i] == ',' {
			i++
		}
	}
}

// jsonString decodes a raw JSON string that json.Valid accepted.
func jsonString(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "" // unreachable for valid JSON; "" is rejected as input
	}
	return s
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value starting at b[i].
// The value must be valid.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++ // the escaped byte cannot end the string
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // end of the enclosing container, after a literal
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i // end of a literal
			}
		}
	}
	return i
}

// redactedHeader copies h for the request log. In Authorization values it
// keeps the scheme and replaces the credential with Redacted.
func redactedHeader(h http.Header) http.Header {
	c := h.Clone()
	// Clone copied the value slices, so editing them in place leaves the
	// request untouched.
	vv := c["Authorization"]
	for i, v := range vv {
		vv[i] = redact(v)
	}
	return c
}

func redact(v string) string {
	scheme, cred, ok := strings.Cut(v, " ")
	if !ok {
		// A bare "Bearer" carries no secret. Anything else may be a raw
		// token.
		if v == "" || strings.EqualFold(v, "Bearer") {
			return v
		}
		return Redacted
	}
	if !isAuthScheme(scheme) {
		return Redacted
	}
	if strings.TrimSpace(cred) == "" {
		return scheme + " "
	}
	return scheme + " " + Redacted
}

// isAuthScheme accepts a short run of ASCII letters: Bearer, Basic,
// Digest, ... Anything else before the first space might be part of a
// secret.
func isAuthScheme(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}
