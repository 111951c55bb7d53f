// Command benchapi is the API of `make bench`: an HTTP server, in a process
// of its own, that answers every POST /v1/workspace_agents/{id}/trigger
// with 202 Accepted after a fixed delay, and counts the calls and the
// distinct Idempotency-Keys (GET /stats, POST /reset), so that a run can
// show nothing was lost or sent twice. It prints its base URL on stdout.
// It checks nothing else: the emulator (agentapi/emulator) is the
// faithful API; this is the cheapest one, so that the machine's two cores
// go to the workers under test.
//
// -conflict names trigger ids that are not runnable: each call of one is
// answered 409 Conflict, for ever, after the same delay as a 202 (as the
// emulator answers a trigger that is not runnable: the API decides after
// it received and read the call, and a worker cannot learn of the 409
// sooner than of a 202, so the calls it admits meanwhile are counted).
// /stats counts those calls apart, per id, with the times a worker's
// probes are judged by: the first call, the first 409 written, the last
// call, and how many calls had arrived before the first 409 was written
// (the calls in flight when the agent first answered 409). "calls" and
// "keys" count the 202s only.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// conflictStats are the calls of one trigger id answered 409.
type conflictStats struct {
	Calls int `json:"calls"`
	// Keys is the number of distinct Idempotency-Keys among them.
	Keys int `json:"keys"`
	// BeforeFirstAnswer is how many calls had arrived before the first
	// 409 was written, the first call included.
	BeforeFirstAnswer int       `json:"before_first_answer"`
	FirstCall         time.Time `json:"first_call"`
	FirstAnswer       time.Time `json:"first_answer"`
	LastCall          time.Time `json:"last_call"`

	keys map[string]struct{}
}

type counts struct {
	mu        sync.Mutex
	calls     int // answered 202
	keys      map[string]struct{}
	noKey     int
	maxInUse  int
	inUse     int
	conflicts map[string]*conflictStats // by trigger id; fixed set, reset in place
}

// stats is the body of GET /stats.
type stats struct {
	Calls     int                       `json:"calls"`
	Keys      int                       `json:"keys"`
	NoKey     int                       `json:"no_key"`
	MaxInUse  int                       `json:"max_in_use"`
	InUse     int                       `json:"in_use"`
	Conflicts map[string]*conflictStats `json:"conflicts,omitempty"`
}

// conflictList is the value of -conflict: trigger ids, repeated or
// separated by commas.
type conflictList map[string]struct{}

func (l conflictList) String() string {
	ids := make([]string, 0, len(l))
	for id := range l {
		ids = append(ids, id)
	}
	return strings.Join(ids, ",")
}

func (l conflictList) Set(v string) error {
	for _, id := range strings.Split(v, ",") {
		id = strings.TrimSpace(id)
		if id == "" || strings.ContainsAny(id, "/?#") {
			return fmt.Errorf("%q is not a trigger id", id)
		}
		l[id] = struct{}{}
	}
	return nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	latency := flag.Duration("latency", 50*time.Millisecond, "delay before each answer")
	conflicts := conflictList{}
	flag.Var(conflicts, "conflict", "trigger id answered 409 Conflict for ever, after the same delay (repeat, or separate by commas)")
	flag.Parse()
	if *latency < 0 {
		fmt.Fprintln(os.Stderr, "benchapi: -latency must not be negative")
		os.Exit(2)
	}
	c := newCounts(conflicts)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchapi:", err)
		os.Exit(1)
	}
	fmt.Printf("http://%s\n", ln.Addr())
	srv := &http.Server{Handler: c.handler(*latency), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "benchapi:", err)
		os.Exit(1)
	}
}

// newCounts counts calls, the calls of the conflicting ids apart.
func newCounts(conflicting conflictList) *counts {
	c := &counts{keys: map[string]struct{}{}, conflicts: map[string]*conflictStats{}}
	for id := range conflicting {
		c.conflicts[id] = &conflictStats{keys: map[string]struct{}{}}
	}
	return c
}

// handler is the API: the trigger route answered after latency, /stats
// and /reset.
func (c *counts) handler(latency time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/workspace_agents/{id}/trigger", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Idempotency-Key")
		c.mu.Lock()
		conflict := c.conflicts[r.PathValue("id")]
		c.inUse++
		c.maxInUse = max(c.maxInUse, c.inUse)
		switch {
		case conflict != nil:
			conflict.called(key, time.Now())
		case key == "":
			c.calls++
			c.noKey++
		default:
			c.calls++
			c.keys[key] = struct{}{}
		}
		c.mu.Unlock()
		if latency > 0 {
			time.Sleep(latency)
		}
		c.mu.Lock()
		c.inUse--
		if conflict != nil && conflict.FirstAnswer.IsZero() {
			conflict.FirstAnswer = time.Now()
		}
		c.mu.Unlock()
		if conflict != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"error":{"message":"the workspace agent trigger is not in a runnable state"}}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		s := stats{Calls: c.calls, Keys: len(c.keys), NoKey: c.noKey, MaxInUse: c.maxInUse, InUse: c.inUse}
		if len(c.conflicts) > 0 {
			s.Conflicts = map[string]*conflictStats{}
			for id, cs := range c.conflicts {
				cp := *cs
				cp.Keys = len(cs.keys)
				s.Conflicts[id] = &cp
			}
		}
		_ = json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		c.mu.Lock()
		c.calls, c.noKey, c.maxInUse, c.keys = 0, 0, 0, map[string]struct{}{}
		for id := range c.conflicts {
			c.conflicts[id] = &conflictStats{keys: map[string]struct{}{}}
		}
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// called records a call of a conflicting id that arrived at now. The
// caller holds the lock.
func (cs *conflictStats) called(key string, now time.Time) {
	cs.Calls++
	cs.keys[key] = struct{}{}
	if cs.FirstCall.IsZero() {
		cs.FirstCall = now
	}
	cs.LastCall = now
	if cs.FirstAnswer.IsZero() {
		cs.BeforeFirstAnswer++
	}
}
