// Package app wires agentrelay together from its configuration: the NATS
// connection, the streams it manages, the trigger client and token sources,
// the routes, the relay, and the HTTP listener for metrics and health. The
// run and dev commands are thin layers over Run.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/backoff"
	"github.com/agentrelay/agentrelay/internal/buildinfo"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/natsconn"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// Options tune Run beyond the configuration file.
type Options struct {
	// Registry to register metrics on. Default: a new registry.
	Registry *prometheus.Registry
	// Started, if set, is called once the relay is set up and the HTTP
	// listener (if any) is serving, with the listener's address.
	Started func(metricsAddr string)
	// TracerProvider traces deliveries instead of the provider the OTEL_*
	// environment asks for (see StartTracing); the caller shuts it down.
	TracerProvider trace.TracerProvider
}

// Errors Run returns when the worker cannot go on (besides
// natsconn.ErrClosed, for a NATS connection closed for good).
var (
	// ErrListenerStopped: the listener for /metrics and the probes stopped
	// serving; the kubelet would see failing probes but not why.
	ErrListenerStopped = errors.New("the /metrics and probe listener stopped")
	// ErrRelayStopped: the relay returned without being asked to stop.
	ErrRelayStopped = errors.New("the relay stopped by itself")
)

// Run serves /healthz at once, connects to NATS (retrying until it is
// reachable), sets up the streams and consumers (retrying while something is
// missing, such as a stream an operator has not created yet), and relays
// until ctx ends; then it drains and closes the connection cleanly. It
// returns nil when ctx ends, at whatever stage, and an error for what a
// retry cannot fix: the configuration, a listen address in use, or a
// failure that leaves the process alive but unable to work (the NATS
// connection closed for good, the listener or the relay stopped). In the
// last case /healthz fails and agentrelay_ready is 0 at once, the cause is
// logged, and the relay drains what it still can before Run returns, so
// that the process exits non-zero and is restarted.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) error {
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	metrics := telemetry.NewMetrics(reg)
	// The dead-letter backlog's series exist from the start, at zero, for
	// every route, before NATS is reached: alerts find them (see
	// watchDeadLetters).
	metrics.SetDeadLetterBacklog(routeNames(cfg), dlq.Reasons, nil, nil)
	bi := buildinfo.Get()
	log.Info("starting agentrelay", "version", bi.Version, "revision", bi.Revision, "routes", len(cfg.Routes))

	client, routes, err := buildRoutes(cfg, log, metrics)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	tp := o.TracerProvider
	if tp == nil {
		tr, err := StartTracing(ctx, WorkerServiceName, os.Getenv, os.Stdout, log)
		if err != nil {
			return err
		}
		// Deferred first, so it runs last: after the drain, the spans of
		// the last settled events are flushed too.
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), TracingShutdownTimeout)
			defer c()
			if err := tr.Shutdown(sctx); err != nil {
				log.Warn("tracing: flushing spans at exit", "err", tr.Scrubbed(err))
			}
		}()
		tp = tr.Provider
	}

	// Everything below runs under runCtx, which a fatal failure cancels.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	state := &health{log: log, metrics: metrics, stop: cancel}
	state.set("connecting to NATS")
	var addr string
	if cfg.Metrics.Listen != "off" {
		srv, ln, err := serveHTTP(cfg.Metrics.Listen, reg, state)
		if err != nil {
			return fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
		addr = ln.Addr().String()
		log.Info("serving /metrics, /healthz and /readyz", "addr", addr)
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			state.stopping()
			_ = srv.Shutdown(sctx)
		}()
	}

	nc, err := natsconn.Connect(runCtx, cfg.NATS, log, natsconn.Hooks{
		Connected:   metrics.SetNATSConnected,
		Reconnected: metrics.NATSReconnected,
		Closed:      state.natsClosed,
	})
	if err != nil {
		if err := state.err(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			log.Info("stopped before connecting to NATS")
			return nil
		}
		return err
	}
	defer func() {
		state.stopping()
		nc.Close()
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ro := relayOptions(cfg)
	ro.Logger, ro.Observer, ro.TracerProvider = log, metrics, tp
	relay, err := consumer.New(js, routes, ro)
	if err != nil {
		return err
	}
	state.set("setting up streams and consumers")
	if !setUp(runCtx, js, cfg, relay, log, state) {
		if err := state.err(); err != nil {
			return err
		}
		log.Info("stopped before set-up finished")
		return nil
	}
	state.relay(nc, relay)
	// The owners of ordered routes say which keys are blocked
	// (agentrelay status); stopped before the connection closes.
	defer serveOrderedStatus(nc, relay, routes, log)()
	// Stopped before the connection closes (deferred later, run earlier).
	defer watchDeadLetters(runCtx, js, cfg, metrics, log, cfg.Worker.LagInterval.D())()
	if o.Started != nil {
		o.Started(addr)
	}

	runErr := relay.Run(runCtx)
	if runCtx.Err() == nil {
		// Nothing asked the relay to stop: without it the process would
		// live on doing nothing.
		if runErr == nil {
			runErr = ErrRelayStopped
		}
		state.fail(runErr)
	}
	// Flush acks, naks and terms and close the connection cleanly.
	if err := nc.FlushTimeout(5 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("flushing NATS connection", "err", err)
	}
	if err := state.err(); err != nil {
		return err
	}
	return runErr
}

// setUp ensures the managed streams and sets up the relay, retrying with
// backoff until it works or ctx ends (false). Every failure is logged with
// what is wrong, and /readyz says it too.
func setUp(ctx context.Context, js jetstream.JetStream, cfg *config.Config, relay *consumer.Relay, log *slog.Logger, state *health) bool {
	// What is missing (a stream an operator creates) may take minutes to
	// appear: every second at first, then every 30s.
	err := backoff.Retry(ctx, backoff.Policy{Min: time.Second, Max: 30 * time.Second}, func(ctx context.Context) error {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := ensureStreams(sctx, js, cfg.Streams, log); err != nil {
			return err
		}
		return relay.Setup(sctx)
	}, func(err error, wait time.Duration) bool {
		state.set("set-up failed, retrying: " + err.Error())
		log.Error("set-up failed; retrying", "err", err, "retry_in", wait)
		return true
	})
	return err == nil
}

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

// BuildRoutes builds the trigger client and the routes, reading every token
// source once so that a missing token file is reported at start-up. All
// problems are reported together.
func BuildRoutes(cfg *config.Config, log *slog.Logger) (*agentapi.Client, []consumer.Route, error) {
	return buildRoutes(cfg, log, nil)
}

// buildRoutes is BuildRoutes, counting token rotations into metrics when
// it is not nil.
func buildRoutes(cfg *config.Config, log *slog.Logger, metrics *telemetry.Metrics) (*agentapi.Client, []consumer.Route, error) {
	co := ClientOptions(cfg)
	co.UserAgent = buildinfo.Get().UserAgent()
	if cfg.API.TLS.Enabled() {
		tc, err := natsconn.TLSConfig(cfg.API.TLS, log, "api")
		if err != nil {
			return nil, nil, fmt.Errorf("api.tls: %w", err)
		}
		co.TLS = tc
	}
	if cfg.API.AllowInsecureHTTP {
		log.Warn("api.allow_insecure_http is set: agent tokens may cross the network in clear text")
	}
	client, err := agentapi.NewClient(cfg.API.BaseURL, co)
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	routes := make([]consumer.Route, 0, len(cfg.Routes))
	for i, rc := range cfg.Routes {
		path := fmt.Sprintf("routes[%d] (%s)", i, rc.Name)
		tokens, err := TokenSource(rc.Token)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.token: %w", path, err))
			continue
		}
		if ft, ok := tokens.(*agentapi.FileToken); ok && metrics != nil {
			rm, rlog := metrics.Route(rc.Name), log.With("route", rc.Name, "file", rc.Token.File)
			ft.OnChange(func() {
				rm.TokenReloaded()
				rlog.Info("token file changed: using the new token")
			})
		}
		id, err := agentapi.ParseTriggerID(rc.TriggerID)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.trigger_id: %w", path, err))
			continue
		}
		agent, err := client.Agent(id, tokens)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		routes = append(routes, Route(rc, agent))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return client, routes, nil
}

// TokenSource opens a route's token source.
func TokenSource(t config.Token) (agentapi.TokenSource, error) {
	if t.File != "" {
		return agentapi.NewFileToken(t.File, 0)
	}
	return agentapi.EnvToken(t.Env)
}

// StreamConfig converts a managed stream's configuration.
func StreamConfig(s config.Stream) jetstream.StreamConfig {
	sc := jetstream.StreamConfig{
		Name:        s.Name,
		Description: "managed by agentrelay",
		Subjects:    s.Subjects,
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      s.MaxAge.D(),
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Duplicates:  s.DuplicateWindow.D(),
	}
	if s.MaxBytes > 0 {
		sc.MaxBytes = s.MaxBytes
	}
	switch s.Retention {
	case "workqueue":
		sc.Retention = jetstream.WorkQueuePolicy
	case "interest":
		sc.Retention = jetstream.InterestPolicy
	}
	if s.Storage == "memory" {
		sc.Storage = jetstream.MemoryStorage
	}
	return sc
}

// ensureStreams creates or updates the configured streams.
func ensureStreams(ctx context.Context, js jetstream.JetStream, streams []config.Stream, log *slog.Logger) error {
	var errs []error
	for i, s := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, StreamConfig(s)); err != nil {
			errs = append(errs, fmt.Errorf("streams[%d] (%s): %w", i, s.Name, err))
			continue
		}
		log.Debug("stream ready", "stream", s.Name)
	}
	return errors.Join(errs...)
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

func routeNames(cfg *config.Config) []string {
	out := make([]string, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
		out = append(out, r.Name)
	}
	return out
}
