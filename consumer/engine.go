package consumer

import (
	"log/slog"
	"sync"
	"time"

	"github.com/agentrelay/agentrelay/internal/observe"
)

// engine keeps one route's in-flight slots filled, on one long-lived pull
// subscription (puller), and hands what arrives to its route: at once when
// a slot waits for it, or, when it came ahead of a free slot, as soon as
// one frees (the look-ahead, kept alive meanwhile). It owns the slot
// accounting, the look-ahead, the hand-backs held during a drain and the
// handler goroutines, all under one lock.
//
// Pulls are sized to the free slots (limit - in flight - already asked for),
// so a message is only ever asked for when a slot is waiting for it: nothing
// sits in a client buffer while its AckWait runs out. Several pulls may be
// outstanding at once, which keeps delivery continuous: a new pull goes out
// as soon as a quarter of the slots are free, not when the last pull ends.
type engine struct {
	owner engineOwner
	p     *puller
	alive *keepAlives // the messages held, kept alive
	m     observe.RouteObserver
	log   *slog.Logger
	tick  time.Duration // how often outstanding pulls are checked

	mu         sync.Mutex // guards slots, ahead, handBack, handedBack and draining
	slots      slots
	ahead      []aheadMsg // delivered before a slot was free (FIFO)
	handBack   []inbound  // messages a drain hands back once its pulls ended
	handedBack bool       // the drain has flushed handBack
	draining   bool

	wake     chan struct{} // a slot freed, health changed: plan again
	handlers handlers
}

// handlers are an engine's reusable handler goroutines.
type handlers struct {
	idle     chan *pulledMsg // hands a message to a handler goroutine waiting for work
	quit     chan struct{}   // closed when the drain is over: idle handlers exit
	quitOnce sync.Once
}

// engineOwner is the route an engine works for.
type engineOwner interface {
	// plan says how much to pull now.
	plan(now time.Time) pullPlan
	// deliver takes a message that took a slot.
	deliver(m *pulledMsg)
	// handle handles a message on a handler goroutine; the engine frees
	// its slot when handle returns.
	handle(m *pulledMsg)
	// rebind re-creates the consumer (the server says it is gone).
	rebind()
}

// pullPlan is how much the route may pull now.
type pullPlan struct {
	none      bool          // pull nothing (wait for wait, or a signal)
	wait      time.Duration // with none: plan again after this (0: at the next signal)
	limit     int           // messages in flight at most
	lowMark   int           // with pulls outstanding, wait for this many free slots
	lookahead int           // messages asked for ahead of a free slot
	// keepPin, when set, sends a pull at least this often even with no
	// slot free: an ordered route's owner keeps its pin by pulling.
	keepPin time.Duration
}

// aheadMsg is a message delivered before a slot was free, kept alive while
// it waits for one.
type aheadMsg struct {
	msg *pulledMsg
	ka  *keepAlive
}

// handlerIdle is how long a handler goroutine waits for another message
// before it exits.
const handlerIdle = time.Second

func newEngine(owner engineOwner, m observe.RouteObserver, log *slog.Logger, o Options, ackWait time.Duration) *engine {
	e := &engine{
		owner: owner, m: m, log: log, tick: o.PullHeartbeat,
		wake:     make(chan struct{}, 1),
		handlers: handlers{idle: make(chan *pulledMsg), quit: make(chan struct{})},
	}
	e.alive = newKeepAlives(ackWait/3, func() { m.SettleFailed("in_progress") })
	return e
}

// attach sets the engine's puller (which needs the engine) and sizes the
// accounting to it.
func (e *engine) attach(p *puller, holdAll bool) {
	e.p = p
	e.slots = newSlots(p.expiry, p.heartbeat)
	e.slots.holdAll = holdAll
}

func (e *engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// run keeps the route's in-flight slots filled until stop is closed. It
// wakes when a slot frees, when route health changes, when a wait is over,
// and every heartbeat interval to check the outstanding requests.
func (e *engine) run(stop <-chan struct{}) {
	errDelay := 100 * time.Millisecond
	tick := time.NewTicker(e.tick)
	defer tick.Stop()
	for {
		n, wait := e.reserve(time.Now())
		if n > 0 {
			if err := e.p.request(n); err != nil {
				e.release(n)
				e.m.PullFailed()
				e.log.Debug("pull request failed", "err", err)
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
		case <-e.wake:
		case <-timeout:
		case now := <-tick.C:
			e.check(now)
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
// requested. When it returns 0 the loop waits for a signal, or for wait.
func (e *engine) reserve(now time.Time) (n int, wait time.Duration) {
	pl := e.owner.plan(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.draining {
		return 0, 0
	}
	if pl.none {
		n, wait = 0, pl.wait
	} else {
		n, wait = e.slots.free(now, pl.limit, pl.lowMark, pl.lookahead)
	}
	if pl.keepPin > 0 && n == 0 && wait == 0 {
		if since := now.Sub(e.slots.lastSent); since >= pl.keepPin {
			n = 1 // a pull even with every slot taken: it keeps the pin
		} else {
			wait = pl.keepPin - since
		}
	}
	e.slots.book(n)
	return n, wait
}

// delivered takes a message the puller received, carrying the pin id pin
// ("" for none): what it says of the pin goes to the puller's pins, then
// its slot moves from requested to active and it goes to the route, or
// waits for a slot, or, during a drain, is held to be handed back.
func (e *engine) delivered(msg *pulledMsg, pin string) {
	e.mu.Lock()
	req, filled := e.slots.fill(time.Now())
	e.mu.Unlock()
	if filled && pin != "" {
		e.p.pins.delivered(pin, req.pin, req.sent)
	}
	e.mu.Lock()
	draining := e.draining
	waits := e.slots.delivered(time.Now(), !draining)
	if waits {
		// Every slot is taken: it waits here, kept alive, for the next
		// one to free (see free).
		e.ahead = append(e.ahead, aheadMsg{msg, e.alive.add(msg)})
	}
	e.mu.Unlock()
	switch {
	case waits:
	case draining:
		e.handBackUnhandled(msg)
		e.signal()
	default:
		e.owner.deliver(msg)
	}
}

// dispatch hands msg to an idle handler goroutine, or starts one.
//
// Handler goroutines are reused rather than started per message: a call
// goes deep into net/http, so a new goroutine's stack grows (and is copied)
// two or three times on every message; a reused one has grown already.
func (e *engine) dispatch(msg *pulledMsg) {
	select {
	case e.handlers.idle <- msg:
	default:
		go e.handleLoop(msg)
	}
}

// handleLoop handles msg, then further messages from dispatch, until none
// comes for handlerIdle or the drain is over.
func (e *engine) handleLoop(msg *pulledMsg) {
	t := time.NewTimer(handlerIdle)
	defer t.Stop()
	for {
		e.owner.handle(msg)
		e.done()
		t.Reset(handlerIdle)
		select {
		case msg = <-e.handlers.idle:
		case <-t.C:
			return
		case <-e.handlers.quit:
			return
		}
	}
}

// done frees the slot of a handled message.
func (e *engine) done() {
	e.m.InFlight(-1)
	e.free()
}

// free frees the slot of a message that is settled or handed back, and
// fills it from the look-ahead.
func (e *engine) free() {
	e.mu.Lock()
	var next aheadMsg
	if e.slots.done() && len(e.ahead) > 0 {
		next, e.ahead = e.ahead[0], e.ahead[1:]
	}
	e.mu.Unlock()
	if next.msg != nil {
		next.ka.stop()
		e.m.InFlight(1)
		e.dispatch(next.msg)
	}
	e.signal()
}

// release gives back requested slots a pull request did not fill.
func (e *engine) release(n int) {
	e.mu.Lock()
	e.slots.release(n)
	e.mu.Unlock()
	e.signal()
}

// sent records a pull request for n booked messages presenting pin; it
// returns the request's reply token.
func (e *engine) sent(n int, reconnects uint64, pin string) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.slots.sent(n, time.Now(), reconnects, pin)
}

// request is what request token was sent with, while it is open.
func (e *engine) request(token uint64) (openPull, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.slots.request(token)
}

// unsent forgets a request that could not be sent (its booking is released
// by the pull loop).
func (e *engine) unsent(token uint64) {
	e.mu.Lock()
	e.slots.unsent(token)
	e.mu.Unlock()
}

// ended applies a status of the request with token.
func (e *engine) ended(token uint64, st pullStatus, pending int) (released int, reset bool) {
	e.mu.Lock()
	released, reset = e.slots.ended(token, st, pending, time.Now())
	e.mu.Unlock()
	e.signal()
	return released, reset
}

// check resets the accounting when the outstanding requests may have been
// lost.
func (e *engine) check(now time.Time) {
	e.mu.Lock()
	why := e.slots.check(now, e.p.nc.Stats().Reconnects)
	e.mu.Unlock()
	if why != "" {
		e.m.PullFailed()
		e.log.Debug("pull requests may be lost; asking again", "why", why)
		e.signal()
	}
}

// active is how many messages hold a slot.
func (e *engine) active() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.slots.active
}

func (e *engine) rebind() { e.owner.rebind() }
