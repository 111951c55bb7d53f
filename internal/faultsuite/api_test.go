package faultsuite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
)

// maxWorkers bounds the worker slots the recorder tells apart.
const maxWorkers = 16

// apiServer is the emulator behind a recorder, on a loopback port. Worker
// slot i is given the base URL URL+"/w<i>", so every request says which
// replica sent it; the recorder strips the prefix before the emulator sees
// the request.
type apiServer struct {
	emu *emulator.Emulator
	rec *recorder
	URL string
}

// startAPI serves emu through a recorder. replyDelay, if set, holds back
// each 202 answer after the emulator has enqueued the event: the network
// on the way back. A worker killed in that window leaves an event that was
// accepted but never acknowledged to JetStream.
func startAPI(t testing.TB, emu *emulator.Emulator, replyDelay time.Duration, seed uint64) *apiServer {
	t.Helper()
	rec := &recorder{next: emu, maxDelay: replyDelay, rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base, cancel := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:           rec,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("API server: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel() // ends hangs and held answers
		_ = srv.Close()
		<-done
	})
	return &apiServer{emu: emu, rec: rec, URL: "http://" + ln.Addr().String()}
}

// WorkerURL is the base URL worker slot i calls.
func (a *apiServer) WorkerURL(slot int) string { return a.URL + "/w" + strconv.Itoa(slot) }

// request is one recorded request.
type request struct {
	Request
	worker   int       // slot, -1 when the path had no /w<i> prefix
	at, done time.Time // arrival, and when the answer (or its absence) was settled
}

// recorder logs every request the API receives (worker, trigger id, key,
// input, status) and holds 202 answers back for a random delay.
type recorder struct {
	next     http.Handler
	maxDelay time.Duration

	rngMu sync.Mutex
	rng   *rand.Rand

	inFlight [maxWorkers]atomic.Int32 // requests being answered, per worker slot
	holding  [maxWorkers]atomic.Int32 // accepted events whose 202 is held back, per slot

	mu       sync.Mutex
	reqs     []request
	calling  [maxWorkers]map[string]int // keys being called, per worker slot
	convo    map[string][]*convoCall    // ordered conversations being called (all slots): the calls
	overlaps []overlap
}

// convoCall is one call of an ordered conversation, as the API saw it.
type convoCall struct {
	desc   string // input, worker and arrival, for reports
	worker int
	// abandoned says the call's client hung up before any answer: the
	// call was over for its worker, which may already have called the
	// key's next event by the time the API noticed. Set when the call
	// ends, under recorder.mu.
	abandoned bool
}

// overlap is a call that arrived while others of its conversation were in
// the API.
type overlap struct {
	key     string
	call    *convoCall
	earlier []*convoCall
}

// real reports whether the overlap is two calls at once from the worker's
// side too. A worker's own earlier call that it abandoned (its timeout)
// does not count: the API learns of the hang-up a moment after the
// worker, which may have dead-lettered the event and called the key's
// next one in that moment. Another worker's abandoned call still counts:
// that is the overlap the ordered route's pin and fence must prevent. A
// worker is a slot: a process restarted in the slot of a killed one is
// the same worker here, and the killed one's call, which its kernel ended,
// is abandoned too.
func (o overlap) real() bool {
	for _, e := range o.earlier {
		if !e.abandoned || e.worker != o.call.worker {
			return true
		}
	}
	return false
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	slot := -1
	if rest, ok := strings.CutPrefix(r.URL.Path, "/w"); ok {
		if i := strings.IndexByte(rest, '/'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil && n >= 0 && n < maxWorkers {
				slot = n
				r.URL.Path, r.URL.RawPath = rest[i:], ""
			}
		}
	}
	// Read the body to learn the event's input, and hand the emulator an
	// identical copy. Reading it to the end also lets net/http notice a
	// client that hangs up, as the emulator's hang fault expects.
	body, _ := io.ReadAll(io.LimitReader(r.Body, emulator.MaxBodyBytes+1))
	r.Body = io.NopCloser(bytes.NewReader(body))
	var fields struct {
		Input           string `json:"input"`
		ConversationKey string `json:"conversation_key"`
	}
	_ = json.Unmarshal(body, &fields)

	at := time.Now()
	key := r.Header.Get("Idempotency-Key")
	sw := &statusWriter{ResponseWriter: w}
	if ck := fields.ConversationKey; ck != "" && strings.Contains(r.URL.Path, "/"+orderedTrigger+"/") {
		rc.mu.Lock()
		if rc.convo == nil {
			rc.convo = map[string][]*convoCall{}
		}
		call := &convoCall{desc: fmt.Sprintf("%s from worker %d at %s", fields.Input, slot, at.Format("15:04:05.000")), worker: slot}
		if others := rc.convo[ck]; len(others) > 0 {
			rc.overlaps = append(rc.overlaps, overlap{key: ck, call: call, earlier: slices.Clone(others)})
		}
		rc.convo[ck] = append(rc.convo[ck], call)
		rc.mu.Unlock()
		// The client hung up if the request's context ends while the
		// handler runs: net/http cancels it only after the handler
		// returns otherwise (a hijacked connection included).
		stopWatch := context.AfterFunc(r.Context(), func() {})
		defer func() {
			clientGone := !stopWatch()
			rc.mu.Lock()
			call.abandoned = clientGone && sw.status == 0
			rc.convo[ck] = slices.DeleteFunc(rc.convo[ck], func(c *convoCall) bool { return c == call })
			rc.mu.Unlock()
		}()
	}
	if slot >= 0 {
		rc.inFlight[slot].Add(1)
		defer rc.inFlight[slot].Add(-1)
		rc.mu.Lock()
		if rc.calling[slot] == nil {
			rc.calling[slot] = map[string]int{}
		}
		rc.calling[slot][key]++
		rc.mu.Unlock()
	}
	if rc.maxDelay > 0 && slot >= 0 {
		sw.beforeAccepted = func() {
			rc.holding[slot].Add(1)
			defer rc.holding[slot].Add(-1)
			t := time.NewTimer(rc.delay())
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
			}
		}
	}
	rc.next.ServeHTTP(sw, r)

	id, _ := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/v1/workspace_agents/"), "/trigger")
	q := request{Request: Request{TriggerID: id, Key: key, Input: fields.Input, Status: sw.status}, worker: slot, at: at, done: time.Now()}
	rc.mu.Lock()
	if slot >= 0 {
		if rc.calling[slot][key]--; rc.calling[slot][key] <= 0 {
			delete(rc.calling[slot], key)
		}
	}
	rc.reqs = append(rc.reqs, q)
	rc.mu.Unlock()
}

func (rc *recorder) delay() time.Duration {
	rc.rngMu.Lock()
	defer rc.rngMu.Unlock()
	return time.Duration(rc.rng.Int64N(int64(rc.maxDelay)))
}

// busy reports a worker slot's requests in flight and accepted events whose
// answer is held back.
func (rc *recorder) busy(slot int) (inFlight, holding int) {
	return int(rc.inFlight[slot].Load()), int(rc.holding[slot].Load())
}

// orderedTrigger is the ordered route's agent, whose calls the recorder
// checks for overlaps per conversation key.
const orderedTrigger = triggerConvo

// keyOverlaps lists the ordered conversations called twice at once.
func (rc *recorder) keyOverlaps() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, o := range rc.overlaps {
		if !o.real() {
			continue
		}
		earlier := make([]string, len(o.earlier))
		for i, e := range o.earlier {
			earlier[i] = e.desc
		}
		out = append(out, fmt.Sprintf("%s (%s, while in the API: %s)", o.key, o.call.desc, strings.Join(earlier, "; ")))
	}
	return out
}

// afterOwnAbandoned counts the ordered calls that came while the API still
// held only calls their own worker had given up: not overlaps (see
// overlap.real), printed so that a run shows how often it happens.
func (rc *recorder) afterOwnAbandoned() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, o := range rc.overlaps {
		if !o.real() {
			n++
		}
	}
	return n
}

// lastCaller returns the worker slot that made the latest call to
// trigger, or -1.
func (rc *recorder) lastCaller(trigger string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i := len(rc.reqs) - 1; i >= 0; i-- {
		if rc.reqs[i].TriggerID == trigger {
			return rc.reqs[i].worker
		}
	}
	return -1
}

// callingKeys returns the keys a worker slot is calling now.
func (rc *recorder) callingKeys(slot int) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for k := range rc.calling[slot] {
		out = append(out, k)
	}
	return out
}

// requests returns every recorded request.
func (rc *recorder) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

// countStatus counts the answers with a status since request number from.
func (rc *recorder) countStatus(status, from int) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, q := range rc.reqs[min(from, len(rc.reqs)):] {
		if q.Status == status {
			n++
		}
	}
	return n
}

// countTriggerStatus counts the answers with a status to calls of one
// trigger id.
func (rc *recorder) countTriggerStatus(trigger string, status int) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, q := range rc.reqs {
		if q.TriggerID == trigger && q.Status == status {
			n++
		}
	}
	return n
}

func (rc *recorder) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

// statusWriter records the status the emulator answers and runs
// beforeAccepted before a 202 leaves. It unwraps to the real writer, so the
// emulator can still hijack the connection to drop it.
type statusWriter struct {
	http.ResponseWriter
	status         int
	beforeAccepted func()
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	if code == http.StatusAccepted && s.beforeAccepted != nil {
		s.beforeAccepted()
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
