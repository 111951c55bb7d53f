package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// health is the one place that decides the worker is dead: alive as a
// process but unable to work, with nothing in the process that would
// recover it. That is a NATS connection nats.go closed for good without
// Run asking, the listener for the probes failing, or the relay stopping on
// its own. Then, at once: /healthz fails (the kubelet restarts the pod),
// /readyz and agentrelay_ready say not ready (the alert sees it), the cause
// is logged as an error, and Run's context is canceled so that the relay
// drains what it can and Run returns the cause.
//
// It also holds what /readyz reports: a reason for not being ready until
// the relay runs, then the connection's and the relay's own state.
type health struct {
	log     *slog.Logger
	metrics *telemetry.Metrics
	stop    context.CancelCauseFunc

	// closing is set before Run closes the connection (or the listener)
	// itself, which is then no failure.
	closing atomic.Bool

	mu     sync.Mutex
	fatal  error
	reason string
	nc     *nats.Conn
	r      *consumer.Relay
}

// fail records the first fatal failure and acts on it.
func (s *health) fail(err error) {
	s.mu.Lock()
	first := s.fatal == nil
	if first {
		s.fatal = err
	}
	s.mu.Unlock()
	if !first {
		return
	}
	s.metrics.SetReady(false)
	s.log.Error("agentrelay cannot go on; draining what it can and exiting so that it is restarted", "err", err)
	s.stop(err)
}

// natsClosed is the connection's Closed hook.
func (s *health) natsClosed(err error) {
	if s.closing.Load() {
		return
	}
	s.fail(err)
}

// stopping says that Run itself is closing the connection and listener.
func (s *health) stopping() { s.closing.Store(true) }

// err returns the fatal failure, or nil.
func (s *health) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fatal
}

func (s *health) set(reason string) {
	s.mu.Lock()
	s.reason = reason
	s.mu.Unlock()
}

func (s *health) relay(nc *nats.Conn, r *consumer.Relay) {
	s.mu.Lock()
	s.nc, s.r, s.reason = nc, r, ""
	s.mu.Unlock()
}

// notReady returns why the worker is not ready, or "".
func (s *health) notReady() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fatal != nil {
		return "dead: " + s.fatal.Error()
	}
	if s.r == nil {
		return s.reason
	}
	var why []string
	if !s.nc.IsConnected() {
		why = append(why, "not connected to NATS")
	}
	if !s.r.Ready() {
		why = append(why, "relay not running (starting or draining)")
	}
	return strings.Join(why, "; ")
}

// serveHTTP serves /metrics, /healthz (the process is alive and able to
// work; otherwise 503 with the cause, see health) and /readyz (connected to
// NATS, every route bound, not draining; otherwise 503 with the reason).
// If serving stops before Run shuts the server down, that is fatal.
func serveHTTP(addr string, reg *prometheus.Registry, state *health) (*http.Server, net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := state.err(); err != nil {
			http.Error(w, "dead: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := state.notReady(); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		err := srv.Serve(ln)
		if !state.closing.Load() && !errors.Is(err, http.ErrServerClosed) {
			state.fail(fmt.Errorf("%w: %v", ErrListenerStopped, err))
		}
	}()
	return srv, ln, nil
}
