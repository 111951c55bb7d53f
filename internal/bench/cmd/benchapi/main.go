// Command benchapi is the API of `make bench`: an HTTP server, in a process
// of its own, that answers every POST /v1/workspace_agents/{id}/trigger
// with 202 Accepted after a fixed delay, and counts the calls and the
// distinct Idempotency-Keys (GET /stats, POST /reset), so that a run can
// show nothing was lost or sent twice. It prints its base URL on stdout.
// It checks nothing else: the emulator (agentapi/emulator) is the
// faithful API; this is the cheapest one, so that the machine's two cores
// go to the workers under test.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

type counts struct {
	mu       sync.Mutex
	calls    int
	keys     map[string]struct{}
	noKey    int
	maxInUse int
	inUse    int
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	latency := flag.Duration("latency", 50*time.Millisecond, "delay before each answer")
	flag.Parse()
	c := &counts{keys: map[string]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/workspace_agents/{id}/trigger", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Idempotency-Key")
		c.mu.Lock()
		c.calls++
		c.inUse++
		c.maxInUse = max(c.maxInUse, c.inUse)
		if key == "" {
			c.noKey++
		} else {
			c.keys[key] = struct{}{}
		}
		c.mu.Unlock()
		if *latency > 0 {
			time.Sleep(*latency)
		}
		c.mu.Lock()
		c.inUse--
		c.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]int{"calls": c.calls, "keys": len(c.keys), "no_key": c.noKey, "max_in_use": c.maxInUse, "in_use": c.inUse})
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		c.mu.Lock()
		c.calls, c.noKey, c.maxInUse, c.keys = 0, 0, 0, map[string]struct{}{}
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchapi:", err)
		os.Exit(1)
	}
	fmt.Printf("http://%s\n", ln.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "benchapi:", err)
		os.Exit(1)
	}
}
