package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentrelay/agentrelay/internal/observe"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

// runner relays one route: a pull loop that keeps the route's in-flight
// slots filled, and a goroutine per message in flight.
//
// Pulls are sized to the free slots (limit - in flight - already asked for),
// so a message is only ever asked for when a slot is waiting for it: nothing
// sits in a client buffer while its AckWait runs out. Several pulls may be
// outstanding at once, which keeps delivery continuous: a new pull goes out
// as soon as a quarter of the slots are free, not when the last pull ends.
type runner struct {
	relay   *Relay
	route   Route
	limit   int
	alive   *keepAlives // the messages held, kept alive
	lowMark int         // a new pull waits for this many free slots while another is outstanding
	log     *slog.Logger
	m       observe.RouteObserver
	health  *health
	rate    *rate.Limiter // nil without MaxRate
	fleet   *fleetGate
	order   *ordered      // nil for an unordered route
	tracing *routeTracing // nil with tracing off

	// holding is set while one of this replica's messages is held to probe
	// the route with: one per replica, the rest are handed back.
	holding atomic.Bool
	// healthEvt is closed and replaced on every health transition, to wake
	// a held probe.
	evtMu     sync.Mutex
	healthEvt chan struct{}
	// failures counts each message's own failures on this replica, by
	// stream sequence, for backoff and MaxAttempts.
	failMu   sync.Mutex
	failures map[uint64]int

	// What the lag loop observes beyond consumer info (observe.go).
	lagStream     jetstream.Stream // looked up on first use; only the lag loop uses it
	oldestFailing bool             // the lag loop's last read of the oldest unacked event failed
	retryWaits    retryWaits
	acceptLog     acceptLog

	cons          atomic.Pointer[jetstream.Consumer]
	rebinding     atomic.Bool
	ackFloor      atomic.Uint64 // the consumer's ack floor as last seen (stream sequence)
	streamCreated atomic.Int64  // the stream's creation time at bind, to tell a re-created stream

	lagMu      sync.Mutex // serialises readLag (its stream handle, gauges)
	mu         sync.Mutex // guards slots, ahead and the hand-back
	slots      slots
	ahead      []aheadMsg // delivered before a slot was free (FIFO)
	lookahead  int        // how many may be asked for ahead of a free slot
	handBack   []inbound
	handedBack bool // the drain has flushed handBack
	wake       chan struct{}
	p          *puller

	draining     atomic.Bool
	drainStarted chan struct{}   // closed when the drain begins
	callCtx      context.Context // canceled when the drain grace runs out
	cancelCalls  context.CancelFunc

	// idle hands a message to a handler goroutine waiting for work; see
	// dispatch. quit, closed when the drain is over, sends them away.
	idle     chan inbound
	quit     chan struct{}
	quitOnce sync.Once
}

// handlerIdle is how long a handler goroutine waits for another message
// before it exits.
const handlerIdle = time.Second

func newRunner(r *Relay, rt Route) *runner {
	rn := &runner{
		relay:        r,
		route:        rt,
		limit:        rt.MaxInFlight,
		lowMark:      max(1, rt.MaxInFlight/4),
		log:          r.log.With("route", rt.Name, "stream", rt.Stream, "trigger_id", rt.Agent.ID().String()),
		m:            r.opts.Observer.ObserveRoute(rt.Name),
		health:       newHealth(rt.Breaker, rt.MaxInFlight),
		healthEvt:    make(chan struct{}),
		failures:     map[uint64]int{},
		wake:         make(chan struct{}, 1),
		drainStarted: make(chan struct{}),
		idle:         make(chan inbound),
		quit:         make(chan struct{}),
	}
	rn.acceptLog.rate = r.opts.LogAccepted
	rn.alive = newKeepAlives(rt.AckWait/3, func() { rn.m.SettleFailed("in_progress") })
	rn.tracing = newRouteTracing(r.opts.TracerProvider, rt)
	if rt.MaxRate > 0 {
		rn.rate = rate.NewLimiter(rate.Limit(rt.MaxRate), max(1, int(rt.MaxRate/10)))
	}
	rn.health.outageElsewhere = func() bool { return r.outages.Load() > 0 }
	rn.callCtx, rn.cancelCalls = context.WithCancel(context.Background())
	rn.fleet = newFleetGate(rn)
	if rt.Ordering == OrderByConversationKey {
		rn.order = newOrdered(rn)
	}
	rn.p = newPuller(rn)
	rn.slots = newSlots(rn.p.expiry, rn.p.heartbeat)
	rn.slots.holdAll = rn.order != nil
	rn.lookahead = max(1, rt.MaxInFlight/8)
	rn.m.SetInFlightLimit(rn.limit)
	rn.m.Prime(knownLabels())
	return rn
}

// bind creates or updates the route's durable consumer (ManageConsumers),
// or looks it up and uses it as it is (ObserveConsumers).
//
// Where a consumer starts is only decided when it is created: an existing
// consumer keeps its own deliver policy (JetStream refuses to change it).
// When the consumer disappears under a running relay (deleted by hand, lost
// with its stream's leader) it is re-created after the last ack floor the
// relay saw, not from the start of the stream: with the configured policy
// ("all") every event the stream still retains would be triggered again.
// If the stream itself was re-created meanwhile, its sequence numbers mean
// something else, and the configured policy applies.
//
// An existing consumer that differs from the route is never changed
// silently: the differences are logged as a warning, whether bind rewrites
// the consumer or, observing, uses it as it is. Someone changed it on
// purpose (`nats consumer edit`, NACK), and a restart that undoes that
// without a word is how an operator's fix disappears.
func (rn *runner) bind(ctx context.Context) error {
	js := rn.relay.js
	st, err := js.Stream(ctx, rn.route.Stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("route %q: stream %q does not exist", rn.route.Name, rn.route.Stream)
		}
		return fmt.Errorf("route %q: looking up stream %q: %w", rn.route.Name, rn.route.Stream, err)
	}
	created := st.CachedInfo().Created.UnixNano()
	cfg := rn.route.ConsumerConfig()
	observe := rn.relay.opts.Consumers == ObserveConsumers
	existing, err := js.Consumer(ctx, rn.route.Stream, rn.route.Durable)
	var drift []string
	switch {
	case err == nil:
		ec := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = ec.DeliverPolicy, ec.OptStartSeq, ec.OptStartTime
		drift = ConsumerDrift(ec, cfg)
		if observe {
			if why := unusable(ec, rn.route); len(why) > 0 {
				return fmt.Errorf("route %q: %w: %q on stream %q: %s", rn.route.Name, ErrConsumerUnusable,
					rn.route.Durable, rn.route.Stream, strings.Join(why, "; "))
			}
		}
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if observe {
			return fmt.Errorf("route %q: %w: %q on stream %q (consumers are observed, not managed: create it with NACK or the nats CLI)",
				rn.route.Name, ErrConsumerMissing, rn.route.Durable, rn.route.Stream)
		}
		if floor := rn.ackFloor.Load(); floor > 0 && rn.streamCreated.Load() == created {
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = floor + 1
			rn.log.Error("consumer is gone; re-creating it after its last known ack floor (later messages are delivered again, with their original keys)",
				"consumer", rn.route.Durable, "start_seq", floor+1)
		}
	default:
		return fmt.Errorf("route %q: looking up consumer %q on stream %q: %w", rn.route.Name, rn.route.Durable, rn.route.Stream, err)
	}
	var c jetstream.Consumer
	if observe {
		c = existing
		if len(drift) > 0 {
			rn.log.Warn("consumer differs from the route; using it as it is, since consumers are observed, not managed",
				"consumer", rn.route.Durable, "diff", strings.Join(drift, "; "))
		}
	} else {
		if len(drift) > 0 {
			rn.log.Warn("consumer differs from the route; rewriting it to match (observe consumers instead to keep changes made with NACK or the nats CLI)",
				"consumer", rn.route.Durable, "diff", strings.Join(drift, "; "))
		}
		if c, err = js.CreateOrUpdateConsumer(ctx, rn.route.Stream, cfg); err != nil {
			return fmt.Errorf("route %q: creating or updating consumer %q on stream %q: %w",
				rn.route.Name, rn.route.Durable, rn.route.Stream, err)
		}
	}
	rn.streamCreated.Store(created)
	rn.ackFloor.Store(c.CachedInfo().AckFloor.Stream)
	rn.cons.Store(&c)
	return nil
}

// rebind re-creates a consumer that was deleted under us (by an operator,
// or lost with a stream), once at a time, in the background.
func (rn *runner) rebind() {
	if !rn.rebinding.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer rn.rebinding.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rn.bind(ctx); err != nil {
			rn.log.Error("consumer is gone and could not be bound again", "consumer", rn.route.Durable, "err", err)
		}
	}()
}

// watchLag reads the consumer's info into metrics until stop is closed.
func (rn *runner) watchLag(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-stop; cancel() }() // a drain does not wait for an info request
	t := time.NewTicker(rn.relay.opts.LagInterval)
	defer t.Stop()
	for {
		rn.readLag(ctx)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (rn *runner) readLag(parent context.Context) {
	// The lag loop and, while route health has the route stopped, the
	// fleet gate both read the consumer: one at a time.
	rn.lagMu.Lock()
	defer rn.lagMu.Unlock()
	rn.expireRetryWaits()
	cp := rn.cons.Load()
	if cp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(parent, 5*time.Second)
	defer cancel()
	info, err := (*cp).Info(ctx)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		rn.rebind()
	case err != nil:
		if parent.Err() == nil {
			rn.log.Debug("reading consumer info", "err", err)
		}
	default:
		rn.ackFloor.Store(info.AckFloor.Stream)
		rn.m.ConsumerState(info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting, info.Paused)
		rn.fleet.observe(info.Paused, pauseUntil(info))
		rn.readOldestUnacked(ctx, info)
	}
}

// aheadMsg is a message delivered before a slot was free, kept alive while
// it waits for one.
type aheadMsg struct {
	msg *pulledMsg
	ka  *keepAlive
}
