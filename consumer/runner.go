package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/telemetry"
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
	lowMark int // a new pull waits for this many free slots while another is outstanding
	log     *slog.Logger
	m       *telemetry.RouteMetrics
	br      *breaker

	cons          atomic.Pointer[jetstream.Consumer]
	rebinding     atomic.Bool
	ackFloor      atomic.Uint64 // the consumer's ack floor as last seen (stream sequence)
	streamCreated atomic.Int64  // the stream's creation time at bind, to tell a re-created stream

	mu         sync.Mutex
	active     int // messages being handled
	requested  int // messages asked for by outstanding pulls and not yet arrived
	handBack   []jetstream.Msg
	handedBack bool // the drain has flushed handBack
	wake       chan struct{}
	p          *puller

	draining    atomic.Bool
	callCtx     context.Context // canceled when the drain grace runs out
	cancelCalls context.CancelFunc

	// idle hands a message to a handler goroutine waiting for work; see
	// dispatch. quit, closed when the drain is over, sends them away.
	idle     chan jetstream.Msg
	quit     chan struct{}
	quitOnce sync.Once
}

// handlerIdle is how long a handler goroutine waits for another message
// before it exits.
const handlerIdle = time.Second

func newRunner(r *Relay, rt Route) *runner {
	rn := &runner{
		relay:   r,
		route:   rt,
		limit:   rt.MaxInFlight,
		lowMark: max(1, rt.MaxInFlight/4),
		log:     r.log.With("route", rt.Name, "stream", rt.Stream, "trigger_id", rt.Agent.ID().String()),
		m:       r.opts.Metrics.Route(rt.Name),
		wake:    make(chan struct{}, 1),
		idle:    make(chan jetstream.Msg),
		quit:    make(chan struct{}),
	}
	rn.callCtx, rn.cancelCalls = context.WithCancel(context.Background())
	rn.br = newBreaker(rt.Name, rt.Breaker, rn.breakerChanged)
	rn.p = newPuller(rn)
	rn.m.SetInFlightLimit(rn.limit)
	rn.m.Prime(knownLabels())
	return rn
}

func (rn *runner) breakerChanged(from, to BreakerState) {
	v := telemetry.BreakerClosed
	switch to {
	case BreakerHalfOpen:
		v = telemetry.BreakerHalfOpen
	case BreakerOpen:
		v = telemetry.BreakerOpen
	}
	rn.m.BreakerChanged(from.String(), to.String(), v)
	switch to {
	case BreakerOpen:
		rn.log.Warn("circuit breaker open: pausing pulls", "from", from.String(), "open_for", rn.route.Breaker.OpenTimeout)
	case BreakerHalfOpen:
		rn.log.Info("circuit breaker half-open: probing", "probes", rn.br.probes())
	case BreakerClosed:
		rn.log.Info("circuit breaker closed: resuming", "from", from.String())
	}
}

// bind creates or updates the route's durable consumer.
//
// Where a consumer starts is only decided when it is created: an existing
// consumer keeps its own deliver policy (JetStream refuses to change it).
// When the consumer disappears under a running relay (deleted by hand, lost
// with its stream's leader) it is re-created after the last ack floor the
// relay saw, not from the start of the stream: with the configured policy
// ("all") every event the stream still retains would be triggered again.
// If the stream itself was re-created meanwhile, its sequence numbers mean
// something else, and the configured policy applies.
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
	existing, err := js.Consumer(ctx, rn.route.Stream, rn.route.Durable)
	switch {
	case err == nil:
		ec := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = ec.DeliverPolicy, ec.OptStartSeq, ec.OptStartTime
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if floor := rn.ackFloor.Load(); floor > 0 && rn.streamCreated.Load() == created {
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = floor + 1
			rn.log.Error("consumer is gone; re-creating it after its last known ack floor (later messages are delivered again, with their original keys)",
				"consumer", rn.route.Durable, "start_seq", floor+1)
		}
	default:
		return fmt.Errorf("route %q: looking up consumer %q on stream %q: %w", rn.route.Name, rn.route.Durable, rn.route.Stream, err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, rn.route.Stream, cfg)
	if err != nil {
		return fmt.Errorf("route %q: creating or updating consumer %q on stream %q: %w",
			rn.route.Name, rn.route.Durable, rn.route.Stream, err)
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
			rn.log.Error("consumer is gone and could not be re-created", "consumer", rn.route.Durable, "err", err)
		}
	}()
}

func (rn *runner) signal() {
	select {
	case rn.wake <- struct{}{}:
	default:
	}
}

// pull keeps the route's in-flight slots filled until stop is closed. It
// wakes when a slot frees, when the breaker changes state, when a wait is
// over, and every heartbeat interval to check the outstanding requests.
func (rn *runner) pull(stop <-chan struct{}) {
	errDelay := 100 * time.Millisecond
	tick := time.NewTicker(rn.relay.opts.PullHeartbeat)
	defer tick.Stop()
	for {
		n, wait := rn.reserve(time.Now())
		if n > 0 {
			if err := rn.p.request(n); err != nil {
				rn.release(n)
				rn.m.PullFailed()
				rn.log.Debug("pull request failed", "err", err)
				if !sleep(stop, errDelay) {
					return
				}
				errDelay = min(2*errDelay, 5*time.Second)
				continue
			}
			errDelay = 100 * time.Millisecond
			continue
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case <-stop:
		case <-rn.wake:
		case <-rn.br.changed:
		case <-timeout:
		case now := <-tick.C:
			rn.p.check(now)
		}
		if timer != nil {
			timer.Stop()
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

func sleep(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// reserve decides how many messages to ask for now, and books them as
// requested. When it returns 0 the loop waits for a slot to free, for the
// breaker to change state, or for wait to pass (an open breaker's timeout).
func (rn *runner) reserve(now time.Time) (n int, wait time.Duration) {
	state := rn.br.state()
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.draining.Load() {
		return 0, 0
	}
	if w := rn.p.waitBeforePull(now); w > 0 {
		return 0, w
	}
	var free int
	switch state {
	case BreakerOpen:
		// Pull nothing: messages left in the stream do not burn
		// delivery attempts while the API is down.
		return 0, max(rn.br.remaining(now), 10*time.Millisecond)
	case BreakerHalfOpen:
		free = rn.br.probes() - rn.active - rn.requested
	default:
		free = rn.limit - rn.active - rn.requested
		if rn.requested > 0 && free < rn.lowMark {
			free = 0
		}
	}
	if free <= 0 {
		return 0, 0
	}
	rn.requested += free
	return free, 0
}

// delivered takes a message the puller received: its slot moves from
// requested to active and it goes to a handler, or, during a drain, it is
// held to be handed back.
func (rn *runner) delivered(p *puller, msg *pulledMsg) {
	rn.mu.Lock()
	p.lastSeen = time.Now()
	p.retryDelay = 0
	rn.requested = max(rn.requested-1, 0)
	draining := rn.draining.Load()
	if !draining {
		rn.active++
	}
	rn.mu.Unlock()
	if draining {
		rn.m.Received()
		rn.m.Finished(telemetry.OutcomeRetried, string(agentapi.ClassCanceled), 0, 0)
		rn.giveBack(msg)
		rn.signal()
		return
	}
	rn.m.InFlight(1)
	rn.dispatch(msg)
}

// release gives back requested slots a pull request did not fill.
func (rn *runner) release(n int) {
	rn.mu.Lock()
	rn.requested = max(rn.requested-n, 0)
	rn.mu.Unlock()
	rn.signal()
}

// done frees the slot of a settled message.
func (rn *runner) done() {
	rn.mu.Lock()
	rn.active--
	rn.mu.Unlock()
	rn.m.InFlight(-1)
	rn.signal()
}

// giveBack returns a message to the stream at once (a nak without delay),
// for another replica. During a drain the nak waits until this replica's own
// pulls have ended: JetStream would otherwise redeliver the message straight
// into one of them, and every round trip would burn a delivery attempt.
func (rn *runner) giveBack(msg jetstream.Msg) {
	if rn.draining.Load() {
		rn.mu.Lock()
		held := !rn.handedBack
		if held {
			rn.handBack = append(rn.handBack, msg)
		}
		rn.mu.Unlock()
		if held {
			return
		}
		// The drain is over (a call that outlived it, a straggling
		// delivery): no pull of ours is left to loop into.
	}
	if err := msg.Nak(); err != nil {
		rn.m.SettleFailed("nak")
	}
}

// flushHandBack naks the messages held back during a drain; later ones are
// naked at once.
func (rn *runner) flushHandBack() {
	rn.mu.Lock()
	msgs := rn.handBack
	rn.handBack = nil
	rn.handedBack = true
	rn.mu.Unlock()
	for _, m := range msgs {
		if err := m.Nak(); err != nil {
			rn.m.SettleFailed("nak")
		}
	}
	if len(msgs) > 0 {
		rn.log.Info("handed messages back for other replicas", "count", len(msgs))
	}
}

// drain waits until no message is in flight and no pull request can still
// deliver, or until deadline; then it cancels the calls still running (they
// end as canceled and their messages are handed back at once) and waits for
// that and for the last requests to expire. Then it closes the
// subscription, hands back what arrived meanwhile, and lets the idle
// handler goroutines go.
func (rn *runner) drain(deadline time.Time) {
	if !rn.waitIdle(deadline) {
		rn.mu.Lock()
		left := rn.active
		rn.mu.Unlock()
		rn.log.Warn("drain grace period over: canceling in-flight calls and handing their messages back", "in_flight", left)
		rn.cancelCalls()
		if !rn.waitIdle(time.Now().Add(rn.relay.opts.PullExpiry + 5*time.Second)) {
			rn.log.Error("messages still in flight after cancel; JetStream redelivers them after AckWait")
		}
	}
	rn.cancelCalls()
	rn.p.stop(2 * time.Second)
	rn.flushHandBack()
	rn.quitOnce.Do(func() { close(rn.quit) })
}

func (rn *runner) waitIdle(deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	tick := time.NewTicker(100 * time.Millisecond) // requests end by expiry too, silently
	defer tick.Stop()
	for {
		rn.mu.Lock()
		idle := rn.active == 0 && !rn.p.outstanding(time.Now())
		rn.mu.Unlock()
		if idle {
			return true
		}
		select {
		case <-rn.wake:
		case <-tick.C:
		case <-t.C:
			return false
		}
	}
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
	}
}

// dispatch hands msg to an idle handler goroutine, or starts one.
//
// Handler goroutines are reused rather than started per message: a call
// goes deep into net/http, so a new goroutine's stack grows (and is copied)
// two or three times on every message; a reused one has grown already.
func (rn *runner) dispatch(msg jetstream.Msg) {
	select {
	case rn.idle <- msg:
	default:
		go rn.handleLoop(msg)
	}
}

// handleLoop handles msg, then further messages from dispatch, until none
// comes for handlerIdle or the drain is over.
func (rn *runner) handleLoop(msg jetstream.Msg) {
	t := time.NewTimer(handlerIdle)
	defer t.Stop()
	for {
		rn.handle(msg)
		t.Reset(handlerIdle)
		select {
		case msg = <-rn.idle:
		case <-t.C:
			return
		case <-rn.quit:
			return
		}
	}
}

// handle runs one message through the pipeline: decode, call, decide,
// settle.
func (rn *runner) handle(msg jetstream.Msg) {
	defer rn.done()
	start := time.Now()
	rn.m.Received()
	md, err := msg.Metadata()
	if err != nil {
		// Cannot happen for a message from a pull consumer; if it does,
		// leave it to JetStream rather than guess.
		rn.log.Error("message without JetStream metadata; leaving it for redelivery", "subject", msg.Subject(), "err", err)
		rn.m.SettleFailed("metadata")
		return
	}
	ka := rn.keepAlive(msg)
	defer ka.stop()

	attempt := int(md.NumDelivered)
	h := msg.Headers()
	key, keyErr := IdempotencyKey(h, md)
	ev, reason, decodeErr := rn.route.Contract.Decode(msg.Data(), h)
	var out Outcome
	switch {
	case keyErr != nil:
		out = Outcome{Class: ClassPoison, Reason: ReasonInvalidIdempotencyKey, Err: keyErr}
	case reason != "":
		out = Outcome{Class: ClassPoison, Reason: reason, Err: decodeErr}
	default:
		ev.IdempotencyKey = key
		out = rn.trigger(ev)
	}
	jitter := rn.relay.opts.Jitter()
	act := Decide(out, attempt, rn.route.Retry, jitter)
	rn.settle(msg, md, key, attempt, out, act, jitter, start)
}

// trigger calls the agent through the breaker.
func (rn *runner) trigger(ev agentapi.Event) Outcome {
	t0 := time.Now()
	var status int
	err, open := rn.br.call(func() error {
		var err error
		status, err = rn.route.Agent.Trigger(rn.callCtx, ev)
		return err
	})
	if open {
		return Outcome{Class: ClassCircuitOpen, RetryAfter: rn.br.remaining(time.Now()), Err: err}
	}
	class := agentapi.ClassOfError(err)
	rn.m.Trigger(status, string(class), time.Since(t0).Seconds())
	out := Outcome{Class: class, Status: status, Err: err}
	var ae *agentapi.Error
	if errors.As(err, &ae) {
		out.RetryAfter = ae.RetryAfter
	}
	return out
}

// settle carries out the action. A dead letter is only terminated after
// JetStream acknowledged its copy; when that fails the original is kept and
// retried.
func (rn *runner) settle(msg jetstream.Msg, md *jetstream.MsgMetadata, key string, attempt int, out Outcome, act Action, jitter float64, start time.Time) {
	outcome := telemetry.OutcomeRetried
	level := slog.LevelInfo
	logMsg := "retrying"
	var settleErr error
	switch act.Verdict {
	case VerdictAck:
		outcome, level, logMsg = telemetry.OutcomeAcked, slog.LevelDebug, "accepted"
		if settleErr = msg.Ack(); settleErr != nil {
			rn.m.SettleFailed("ack")
		}
	case VerdictRetry:
		if out.Class == ClassCircuitOpen || out.Class == agentapi.ClassCanceled {
			level = slog.LevelDebug
		}
		if act.Delay > 0 {
			if settleErr = msg.NakWithDelay(act.Delay); settleErr != nil {
				rn.m.SettleFailed("nak")
			}
		} else {
			rn.giveBack(msg)
		}
	case VerdictDeadLetter:
		ctx, cancel := context.WithTimeout(context.Background(), rn.relay.dl.cfg.PublishTimeout)
		_, err := rn.relay.dl.Publish(ctx, msg, md, Letter{
			Reason:    act.Reason,
			Outcome:   out,
			Route:     rn.route.Name,
			TriggerID: rn.route.Agent.ID().String(),
			Key:       key,
			Attempts:  attempt,
		})
		cancel()
		if err != nil {
			rn.m.DeadLetterFailed()
			act = Action{Verdict: VerdictRetry, Delay: Backoff(rn.route.Retry, attempt, 0, jitter), Reason: act.Reason}
			level, logMsg = slog.LevelError, "dead-letter publish failed; keeping the message and retrying"
			out.Err = fmt.Errorf("%w (dead-letter publish: %w)", out.Err, err)
			if settleErr = msg.NakWithDelay(act.Delay); settleErr != nil {
				rn.m.SettleFailed("nak")
			}
			break
		}
		outcome, level, logMsg = telemetry.OutcomeDeadLettered, slog.LevelWarn, "dead-lettered"
		rn.m.DeadLettered(string(act.Reason))
		if settleErr = msg.TermWithReason(string(act.Reason)); settleErr != nil {
			// The copy is stored; a redelivery publishes it again under
			// the same dead-letter message id and JetStream drops the
			// duplicate.
			rn.m.SettleFailed("term")
		}
	}
	rn.m.Finished(outcome, string(out.Class), attempt, time.Since(start).Seconds())
	if settleErr != nil {
		level = max(level, slog.LevelWarn)
	}
	if !rn.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.Uint64("stream_seq", md.Sequence.Stream),
		slog.Int("attempt", attempt),
		slog.String("idempotency_key", key),
		slog.String("class", string(out.Class)),
	)
	if out.Status != 0 {
		attrs = append(attrs, slog.Int("status", out.Status))
	}
	switch act.Verdict {
	case VerdictRetry:
		attrs = append(attrs, slog.Duration("delay", act.Delay))
	case VerdictDeadLetter:
		attrs = append(attrs, slog.String("reason", string(act.Reason)))
	}
	if out.Err != nil {
		attrs = append(attrs, slog.String("err", out.Err.Error()))
	}
	if settleErr != nil {
		attrs = append(attrs, slog.String("settle_err", settleErr.Error()))
	}
	rn.log.LogAttrs(context.Background(), level, logMsg, attrs...)
}

// keepAlive tells JetStream a message is still being worked on, every half
// AckWait, so a slow call or dead-letter publish does not get it redelivered
// to another replica meanwhile.
type keepAlive struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (rn *runner) keepAlive(msg jetstream.Msg) *keepAlive {
	every := rn.route.AckWait / 2
	ka := &keepAlive{}
	ka.mu.Lock()
	defer ka.mu.Unlock()
	ka.t = time.AfterFunc(every, func() {
		ka.mu.Lock()
		defer ka.mu.Unlock()
		if ka.stopped {
			return
		}
		if err := msg.InProgress(); err != nil {
			rn.m.SettleFailed("in_progress")
		}
		ka.t.Reset(every)
	})
	return ka
}

func (ka *keepAlive) stop() {
	ka.mu.Lock()
	ka.stopped = true
	ka.t.Stop()
	ka.mu.Unlock()
}
