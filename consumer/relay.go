package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentrelay/agentrelay/internal/backoff"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/observe"
)

// Relay defaults.
const (
	DefaultDrainGrace    = 20 * time.Second
	DefaultPullExpiry    = 5 * time.Second
	DefaultPullHeartbeat = time.Second
	DefaultLagInterval   = 10 * time.Second
)

// minServerVersion is the oldest nats-server the relay runs against:
// TermWithReason is ignored (the message is NOT terminated) before 2.10.4.
const minServerVersion = "2.10.4"

// Options configure a Relay. The zero value of each field means its default.
type Options struct {
	// Logger receives the relay's logs. Default: discard.
	Logger *slog.Logger
	// Observer is told what the relay does, for metrics. Default: nothing
	// is observed.
	Observer observe.Observer
	// DeadLetter describes the dead-letter stream.
	DeadLetter deadletter.Config
	// DrainGrace is how long in-flight calls may run after Run's context
	// ends before they are canceled and their messages handed back.
	// Default DefaultDrainGrace.
	DrainGrace time.Duration
	// PullExpiry is the lifetime of one pull request. It bounds how long
	// a drain waits for outstanding pulls. Default DefaultPullExpiry.
	PullExpiry time.Duration
	// PullHeartbeat is the idle heartbeat asked of the server for each
	// pull; a pull that misses two is abandoned and replaced, so a lost
	// pull stalls nothing for longer than that. Default DefaultPullHeartbeat.
	PullHeartbeat time.Duration
	// LagInterval is how often consumer info (pending, ack pending,
	// redelivered) is read into metrics. Default DefaultLagInterval.
	LagInterval time.Duration
	// LogAccepted is the share of accepted events logged at info level,
	// with their key, stream sequence, attempt and latency: 0 (the
	// default) logs them at debug only, 1 logs every one, 0.01 one in a
	// hundred.
	LogAccepted float64
	// Jitter returns a number in [0, 1) for backoff jitter. Default
	// math/rand/v2.Float64.
	Jitter func() float64
	// Consumers says whether the relay creates and updates the routes'
	// consumers (ManageConsumers) or only uses and checks them
	// (ObserveConsumers). Default ManageConsumers.
	Consumers ConsumerMode
	// TracerProvider traces every delivery (see trace.go). Nil or a
	// no-op provider: tracing off, at no cost per message.
	TracerProvider trace.TracerProvider
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Observer == nil {
		o.Observer = observe.Nop{}
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	return o.timingDefaults()
}

// timingDefaults sets the zero durations and the dead-letter configuration
// to their defaults. Check refuses what they would not fit (a PullExpiry
// too short for PullHeartbeat) rather than adjusting it.
func (o Options) timingDefaults() Options {
	o.DeadLetter = o.DeadLetter.WithDefaults()
	if o.DrainGrace <= 0 {
		o.DrainGrace = DefaultDrainGrace
	}
	if o.PullExpiry <= 0 {
		o.PullExpiry = DefaultPullExpiry
	}
	if o.PullHeartbeat <= 0 {
		o.PullHeartbeat = DefaultPullHeartbeat
	}
	if o.LagInterval <= 0 {
		o.LagInterval = DefaultLagInterval
	}
	if o.Consumers == "" {
		o.Consumers = ManageConsumers
	}
	return o
}

// Relay runs routes: it binds each to its durable consumer, pulls, calls the
// agent, and settles each message by Decide. It owns the lifecycle: Run
// returns after a graceful drain.
type Relay struct {
	js      jetstream.JetStream
	opts    Options
	log     *slog.Logger
	dl      *deadletter.Writer
	runners []*runner

	setupMu   sync.Mutex // serialises Setup; guards setupDone
	setupDone bool
	ready     atomic.Bool
}

// New returns a Relay for routes. It checks the routes and options (see
// Check) but does not talk to NATS; Setup (or Run) does.
func New(js jetstream.JetStream, routes []Route, o Options) (*Relay, error) {
	var errs []error
	for _, p := range Check(routes, o) {
		if p.Route < 0 {
			errs = append(errs, fmt.Errorf("%w: %w", ErrInvalidOptions, p))
		} else {
			errs = append(errs, fmt.Errorf("%w %q: %w", ErrInvalidRoute, routes[p.Route].Name, p))
		}
	}
	for _, rt := range routes {
		if rt.Agent == nil && rt.Agents == nil {
			errs = append(errs, fmt.Errorf("%w %q: no agent", ErrInvalidRoute, rt.Name))
		}
	}
	if len(routes) == 0 {
		errs = append(errs, errors.New("no routes"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	r := &Relay{js: js, opts: o, log: o.Logger, dl: deadletter.NewWriter(js, o.DeadLetter)}
	for _, rt := range routes {
		r.runners = append(r.runners, newRunner(r, rt.WithDefaults()))
	}
	return r, nil
}

// Ready reports whether every route's consumer is bound and the relay is
// pulling (false before Run and while draining).
func (r *Relay) Ready() bool { return r.ready.Load() }

// Setup checks the server version, creates the dead-letter stream if it is
// missing, and creates or updates every route's durable consumer to match its
// configuration (with ObserveConsumers: looks each up, and fails for one
// that is missing or unusable). It reports every problem, not just the first. After a
// failure it may be called again (a stream an operator creates later); once
// it succeeded it does nothing. Run calls it if needed.
func (r *Relay) Setup(ctx context.Context) error {
	r.setupMu.Lock()
	defer r.setupMu.Unlock()
	if r.setupDone {
		return nil
	}
	if err := r.setup(ctx); err != nil {
		return err
	}
	r.setupDone = true
	return nil
}

func (r *Relay) setup(ctx context.Context) error {
	if v := r.js.Conn().ConnectedServerVersion(); v != "" && !versionAtLeast(v, minServerVersion) {
		return fmt.Errorf("nats-server %s is too old: agentrelay needs %s or later (TermWithReason)", v, minServerVersion)
	}
	var errs []error
	if err := withRetry(ctx, r.dl.Ensure); err != nil {
		errs = append(errs, err)
	} else {
		for _, w := range r.dl.Weaknesses() {
			r.log.Warn("dead-letter stream is less durable than it should be", "stream", r.opts.DeadLetter.Stream, "problem", w)
		}
	}
	v := r.js.Conn().ConnectedServerVersion()
	for _, rn := range r.runners {
		if err := withRetry(ctx, rn.bind); err != nil {
			errs = append(errs, err)
		}
		rn.fleet.enable(v)
	}
	return errors.Join(errs...)
}

// apiAttemptTimeout bounds one JetStream API request during set-up.
const apiAttemptTimeout = 5 * time.Second

// withRetry runs op with a short timeout per attempt, and again while the
// JetStream API does not answer, until ctx ends. In a cluster an answer can
// be lost (a leader change, replicas starting together); that should cost
// one attempt, not the whole start-up. Every op here is idempotent (look-ups,
// create-if-missing, create-or-update). Definite answers ("stream not
// found") are returned at once.
func withRetry(ctx context.Context, op func(context.Context) error) error {
	return backoff.Retry(ctx, backoff.Policy{Min: 100 * time.Millisecond, Max: 2 * time.Second}, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, apiAttemptTimeout)
		defer cancel()
		return op(actx)
	}, func(err error, _ time.Duration) bool { return noAnswer(err) })
}

// noAnswer reports whether err means the request went unanswered rather
// than refused.
func noAnswer(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders)
}

// outageElsewhere reports whether a route of this replica other than rn is
// stopped by an outage (health.outageElsewhere). It reads each route's
// mirror, not its lock, so a route may ask while it holds its own.
func (r *Relay) outageElsewhere(rn *runner) bool {
	for _, other := range r.runners {
		if other != rn && other.health.outage.Load() {
			return true
		}
	}
	return false
}

// Run sets up (if not done), then relays until ctx ends, then drains: it
// stops pulling, lets in-flight calls finish within the drain grace period,
// cancels the rest and hands their messages back with a nak without delay so
// another replica takes them at once. It returns nil after a drain, or the
// set-up error.
func (r *Relay) Run(ctx context.Context) error {
	if err := r.Setup(ctx); err != nil {
		return err
	}
	for i, rn := range r.runners {
		if err := rn.eng.p.start(); err != nil {
			for _, started := range r.runners[:i] {
				started.eng.p.stop(time.Second)
			}
			return fmt.Errorf("route %q: subscribing for pulls: %w", rn.route.Name, err)
		}
	}
	stop := make(chan struct{})
	var loops sync.WaitGroup
	for _, rn := range r.runners {
		for _, loop := range []func(<-chan struct{}){rn.eng.run, rn.watchLag, rn.fleet.run, rn.policy.run} {
			loops.Add(1)
			go func() { defer loops.Done(); loop(stop) }()
		}
	}
	r.setReady(true)
	r.log.Info("relaying", "routes", len(r.runners))

	<-ctx.Done()
	r.setReady(false)
	start := time.Now()
	r.log.Info("draining", "grace", r.opts.DrainGrace)
	for _, rn := range r.runners {
		// Fenced before anything waiting hears of the drain: an ordered
		// event waiting out a retry in place goes back when it does, and
		// its key's next event must not start in its place.
		rn.eng.startDrain()
		rn.policy.release()
		close(rn.life.drainStarted)
	}
	close(stop)
	loops.Wait()

	deadline := start.Add(r.opts.DrainGrace)
	var wg sync.WaitGroup
	for _, rn := range r.runners {
		wg.Add(1)
		go func() { defer wg.Done(); rn.eng.drain(deadline, rn.life.cancelCalls) }()
	}
	wg.Wait()
	// Acks and naks are fire-and-forget publishes: make sure they reached
	// the server before the caller closes the connection.
	if err := r.js.Conn().FlushTimeout(5 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		r.log.Warn("flushing acks after drain", "err", err)
	}
	r.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (r *Relay) setReady(v bool) {
	r.ready.Store(v)
	r.opts.Observer.SetReady(v)
}

// versionAtLeast compares dotted numeric versions ("2.10.4", "2.11.0-beta").
func versionAtLeast(have, want string) bool {
	h, w := versionParts(have), versionParts(want)
	for i := range w {
		if h[i] != w[i] {
			return h[i] > w[i]
		}
	}
	return true
}

func versionParts(v string) [3]int {
	var p [3]int
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	for i, s := range strings.SplitN(v, ".", 3) {
		p[i], _ = strconv.Atoi(s)
	}
	return p
}
