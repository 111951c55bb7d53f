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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/backoff"
	"github.com/agentrelay/agentrelay/internal/buildinfo"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/natsconn"
	"github.com/agentrelay/agentrelay/internal/telemetry"
	"github.com/agentrelay/agentrelay/internal/tracing"
)

// Options tune Run beyond the configuration file.
type Options struct {
	// Registry to register metrics on. Default: a new registry.
	Registry *prometheus.Registry
	// Started, if set, is called once the relay is set up and the HTTP
	// listener (if any) is serving, with the listener's address.
	Started func(metricsAddr string)
	// TracerProvider traces deliveries instead of the provider the OTEL_*
	// environment asks for (see tracing.Start); the caller shuts it down.
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
//
// The worker's components start in the order of worker.components and
// stop in the reverse order (see lifecycle).
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) error {
	bi := buildinfo.Get()
	log.Info("starting agentrelay", "version", bi.Version, "revision", bi.Revision, "routes", len(cfg.Routes))
	w, err := newWorker(cfg, log, o)
	if err != nil {
		return err
	}
	// Everything runs under runCtx, which a fatal failure cancels.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w.state.stop = cancel
	lc := &lifecycle{log: log}
	startErr := lc.start(runCtx, w.components()...)
	if startErr == nil {
		if o.Started != nil {
			o.Started(w.addr)
		}
		<-runCtx.Done()
	}
	lc.stop()
	switch {
	case w.state.err() != nil:
		return w.state.err()
	case startErr != nil && ctx.Err() != nil:
		log.Info("stopped before the worker was running", "while_starting", lc.failed)
		return nil
	case startErr != nil:
		return startErr
	}
	return w.relayErr
}

// worker is what Run starts, and what its components share.
type worker struct {
	cfg     *config.Config
	log     *slog.Logger
	opts    Options
	reg     *prometheus.Registry
	metrics *telemetry.Metrics
	state   *health
	client  *agentapi.Client
	routes  []consumer.Route

	// Set by the components as they start.
	addr     string // the listener's; "" when metrics.listen is off
	tp       trace.TracerProvider
	nc       *nats.Conn
	js       jetstream.JetStream
	relay    *consumer.Relay
	relayErr error // what the relay's Run returned, once it has stopped
}

// newWorker builds what the worker needs before anything starts: the
// metrics, and the trigger client and routes (which reads every token, so
// that a missing one is reported at once).
func newWorker(cfg *config.Config, log *slog.Logger, o Options) (*worker, error) {
	w := &worker{cfg: cfg, log: log, opts: o, reg: o.Registry}
	if w.reg == nil {
		w.reg = prometheus.NewRegistry()
	}
	w.metrics = telemetry.NewMetrics(w.reg)
	// The dead-letter backlog's series exist from the start, at zero, for
	// every route, before NATS is reached: alerts find them (see
	// watchDeadLetters).
	w.metrics.SetDeadLetterBacklog(routeNames(cfg), dlq.Reasons(), nil, nil)
	w.state = &health{log: log, metrics: w.metrics}
	w.state.set("connecting to NATS") // what /readyz says until it is
	var err error
	w.client, w.routes, err = buildRoutes(cfg, log, w.metrics)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// components are the worker's parts in the order they start; they stop in
// the reverse order. The listener starts first, so that /healthz answers
// while NATS is out of reach, and stops last, so that /metrics and the
// probes answer during the drain. The relay starts last and stops first:
// it drains while the dead-letter watcher, the ordered routes' status
// service and the NATS connection it uses are still there. The connection
// then flushes the drain's acks and closes; the trigger client's idle
// connections close; the spans of the last events are flushed.
func (w *worker) components() []component {
	var cs []component
	if w.cfg.Metrics.Listen != "off" {
		cs = append(cs, w.listener())
	}
	return append(cs,
		w.tracer(),
		component{name: "trigger API client", stop: w.client.CloseIdleConnections},
		w.natsConnection(),
		component{name: "streams and consumers", start: w.setUp},
		w.statusService(),
		w.deadLetterWatcher(),
		w.relayLoop(),
	)
}

// listener serves /metrics, /healthz and /readyz (see serveHTTP).
func (w *worker) listener() component {
	var srv *http.Server
	c := component{name: "metrics listener"}
	c.start = func(context.Context) error {
		var ln net.Listener
		var err error
		if srv, ln, err = serveHTTP(w.cfg.Metrics.Listen, w.reg, w.state); err != nil {
			return fmt.Errorf("metrics.listen %s: %w", w.cfg.Metrics.Listen, err)
		}
		w.addr = ln.Addr().String()
		w.log.Info("serving /metrics, /healthz and /readyz", "addr", w.addr)
		return nil
	}
	c.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		w.state.stopping()
		_ = srv.Shutdown(ctx)
	}
	return c
}

// tracer is the tracer provider the OTEL_* environment asks for (see
// tracing.Start), or the one Options gives (its owner shuts it down).
func (w *worker) tracer() component {
	var tr *tracing.Tracer
	start := func(ctx context.Context) error {
		if w.tp = w.opts.TracerProvider; w.tp != nil {
			return nil
		}
		var err error
		if tr, err = tracing.Start(ctx, tracing.WorkerServiceName, os.Getenv, os.Stdout, w.log); err != nil {
			return err
		}
		w.tp = tr.Provider
		return nil
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), tracing.ShutdownTimeout)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			w.log.Warn("tracing: flushing spans at exit", "err", tr.Scrubbed(err))
		}
	}
	return component{name: "tracing", start: start, stop: stop}
}

// natsConnection connects to NATS, retrying until it is reachable. Stopping
// flushes the acks, naks and terms still buffered, then closes.
func (w *worker) natsConnection() component {
	start := func(ctx context.Context) error {
		w.state.set("connecting to NATS")
		nc, err := natsconn.Connect(ctx, w.cfg.NATS, w.log, natsconn.Hooks{
			Connected:   w.metrics.SetNATSConnected,
			Reconnected: w.metrics.NATSReconnected,
			Closed:      w.state.natsClosed,
		})
		if err != nil {
			return err
		}
		w.nc = nc
		w.js, err = jetstream.New(nc)
		return err
	}
	stop := func() {
		if err := w.nc.FlushTimeout(5 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			w.log.Warn("flushing NATS connection", "err", err)
		}
		w.state.stopping()
		w.nc.Close()
	}
	return component{name: "NATS connection", start: start, stop: stop}
}

// statusService serves every route's status on this replica: why it is
// stopped, what it holds (agentrelay status).
func (w *worker) statusService() component {
	var stop func()
	return component{
		name: "status service",
		start: func(context.Context) error {
			stop = serveStatus(w.nc, w.relay, w.routes, w.log)
			return nil
		},
		stop: func() { stop() },
	}
}

// deadLetterWatcher exports the dead-letter backlog (see watchDeadLetters).
func (w *worker) deadLetterWatcher() component {
	var stop func()
	return component{
		name: "dead-letter watcher",
		start: func(ctx context.Context) error {
			stop = watchDeadLetters(ctx, w.js, w.cfg, w.metrics, w.log, w.cfg.Worker.LagInterval.D())
			return nil
		},
		stop: func() { stop() },
	}
}

// relayLoop runs the relay. Stopping it drains: no more pulls, in-flight
// calls finish within worker.drain_grace, the rest is handed back. A relay
// that returns without being asked to is fatal (ErrRelayStopped): without
// it the process would live on doing nothing.
func (w *worker) relayLoop() component {
	var cancel context.CancelFunc
	done := make(chan struct{})
	start := func(runCtx context.Context) error {
		var ctx context.Context
		ctx, cancel = context.WithCancel(runCtx)
		go func() {
			defer close(done)
			err := w.relay.Run(ctx)
			if ctx.Err() == nil {
				if err == nil {
					err = ErrRelayStopped
				}
				w.state.fail(err)
			}
			w.relayErr = err
		}()
		return nil
	}
	stop := func() {
		cancel()
		<-done
	}
	return component{name: "relay", start: start, stop: stop}
}

// setUp builds the relay, then ensures the managed streams and sets up the
// relay, retrying with backoff until it works or ctx ends. Every failure is
// logged with what is wrong, and /readyz says it too.
func (w *worker) setUp(ctx context.Context) error {
	ro := relayOptions(w.cfg)
	ro.Logger, ro.Observer, ro.TracerProvider = w.log, w.metrics, w.tp
	relay, err := consumer.New(w.js, w.routes, ro)
	if err != nil {
		return err
	}
	w.state.set("setting up streams and consumers")
	// What is missing (a stream an operator creates) may take minutes to
	// appear: every second at first, then every 30s.
	err = backoff.Retry(ctx, backoff.Policy{Min: time.Second, Max: 30 * time.Second}, func(ctx context.Context) error {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := ensureStreams(sctx, w.js, w.cfg.Streams, w.log); err != nil {
			return err
		}
		return relay.Setup(sctx)
	}, func(err error, wait time.Duration) bool {
		w.state.set("set-up failed, retrying: " + err.Error())
		w.log.Error("set-up failed; retrying", "err", err, "retry_in", wait)
		return true
	})
	if err != nil {
		return err
	}
	w.relay = relay
	w.state.relay(w.nc, relay)
	return nil
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
		contract, err := appconfig.Contract(rc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.map: %w", path, err))
			continue
		}
		if rc.MapsTriggerID() {
			rm, rlog := routeReloads(metrics, log, rc.Name)
			agents, err := Agents(client, rc, func(file string) {
				rm()
				rlog.Info("token file changed: using the new token", "file", file)
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				continue
			}
			route := Route(rc, nil)
			route.Agents, route.Contract = agents, contract
			routes = append(routes, route)
			continue
		}
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
		route := Route(rc, agent)
		route.Contract = contract
		routes = append(routes, route)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return client, routes, nil
}

// routeReloads counts a route's token reloads into metrics (when not nil)
// and returns the logger to report them with.
func routeReloads(metrics *telemetry.Metrics, log *slog.Logger, route string) (func(), *slog.Logger) {
	count := func() {}
	if metrics != nil {
		count = metrics.Route(route).TokenReloaded
	}
	return count, log.With("route", route)
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

func routeNames(cfg *config.Config) []string {
	out := make([]string, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
		out = append(out, r.Name)
	}
	return out
}
