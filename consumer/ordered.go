package consumer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/observe"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// ordered is an ordered route's policy: each delivery is held (kept alive)
// in the sequencer until it may go, handled, and reported back when
// settled so the next of its key may go. A retry waits where the event is
// (a nak would let the next event of its key overtake it).
//
// The route's consumer has a pinned priority group, so one replica owns it
// at a time (the puller tells the pin). The owner calls only while its pin
// is fresh: the server took one of its pulls presenting the pin within the
// pinned TTL, less a margin, by the monotonic clock, and this process has
// not stalled since. So a replica that wakes from a stall calls nothing
// before it learns whether it still owns the route: not even the events
// the server sent it before the stall, which it reads only after (a
// delivery does not say which pull it filled, so one read after a stall
// may credit the pin with a pull sent after the stall, when the pin had
// lapsed). A pin given up is never taken back: the server pins anew under
// a new id, so a delivery under the old one is from before the loss. When it loses the pin it hands back
// what it holds; calls under way finish (the next owner's fence waits for
// their messages) and are settled or handed back, never retried. When it
// gains the pin the sequencer waits for whatever the previous owner still
// had (the fence).
type ordered struct {
	eng   *engine
	deps  orderedDeps
	calls callSlots

	mu          sync.Mutex // guards every field below
	seq         sequencer
	alive       map[uint64]*keepAlive // held messages not yet running, kept alive
	pin         string                // the pin id this replica holds, "" when none
	confirmedAt time.Time             // when the latest pull the server took with pin was sent
	lostPin     string                // the pin id this replica gave up last
	ranAt       time.Time             // when run last ticked: a longer gap than maxStall is a stall
	lostCh      chan struct{}         // closed when the pin is lost (replaced on gain)
	window      int                   // how many it may hold: the consumer's MaxAckPending as last read
	waiting     int                   // running events waiting out a retry in place
}

// orderedDeps is what an ordered policy needs of its route.
type orderedDeps struct {
	route    Route
	decode   func(*pulledMsg) *decoded
	limit    func() int                // calls route health allows now (AIMD)
	consumer func() jetstream.Consumer // nil until bound
	credible func(*jetstream.ConsumerInfo) bool
	failures func(seq uint64) int // a message's own failures, for status
	nc       *nats.Conn
	stopping <-chan struct{} // closed when the drain begins
	log      *slog.Logger
	m        observe.RouteObserver
}

// maxAdoptedWindow bounds the window an ordered route adopts from its
// consumer (written by another replica with other settings): a multiple of
// what this replica would hold.
const maxAdoptedWindow = 16

func newOrdered(eng *engine, deps orderedDeps) *ordered {
	lost := make(chan struct{})
	close(lost) // no pin yet
	o := &ordered{eng: eng, deps: deps, seq: newSequencer(), alive: map[uint64]*keepAlive{}, lostCh: lost,
		window: deps.route.MaxAckPending, ranAt: time.Now()}
	o.calls = callSlots{max: deps.route.MaxInFlight, limit: deps.limit, freed: make(chan struct{})}
	return o
}

// deliver takes a delivered message (its slot is already taken).
func (o *ordered) deliver(m *pulledMsg) {
	md, err := m.Metadata()
	if err != nil {
		o.deps.m.InFlight(1) // the handler logs it and leaves it to JetStream
		o.eng.dispatch(m)
		return
	}
	key := ""
	if d := o.deps.decode(m); d.reason == "" {
		// A body that breaks the contract is dead-lettered without a
		// call, so it needs no place in a conversation. (One with an
		// unusable message id still names its conversation: it keeps its
		// place, and its dead letter releases the next event.)
		key = d.ev.ConversationKey
	}
	o.mu.Lock()
	if id := m.msg.Header.Get("Nats-Pin-Id"); id != "" && id == o.lostPin && o.pin != id {
		o.mu.Unlock()
		// Sent under a pin this replica gave up (see delivered): left to
		// JetStream, which redelivers it after its ack wait to whoever
		// it pins next. Held here it would wait for a fence that only a
		// pin lifts; a nak would bring it straight back to this
		// replica's pulls under the old pin for as long as they last,
		// and every delivery counts against the event's budget.
		o.eng.leave(m)
		o.eng.free()
		return
	}
	if o.seq.add(md.Sequence.Stream, key, m, time.Now()) {
		o.mu.Unlock()
		// Held already (a redelivery after its ack wait ran out): the
		// copy in hand settles it.
		o.eng.free()
		return
	}
	o.alive[md.Sequence.Stream] = o.eng.alive.add(m)
	ready := o.readyLocked()
	o.mu.Unlock()
	o.start(ready)
}

// readyLocked takes what may start now: at most max_in_flight run at once
// (an ordered route holds more than it runs), not counting those that wait
// out a retry where they are: a key whose event keeps failing holds its
// own key, never a slot of another's.
func (o *ordered) readyLocked() []*pulledMsg {
	return o.takeLocked(o.seq.ready(o.deps.route.MaxInFlight + o.waiting))
}

// takeLocked turns the sequencer's items into messages leaving the hold:
// their keep-alives stop (a handler keeps them alive, or they go back).
func (o *ordered) takeLocked(items []any) []*pulledMsg {
	out := make([]*pulledMsg, len(items))
	for i, it := range items {
		m := it.(*pulledMsg)
		if ka := o.alive[m.md.Sequence.Stream]; ka != nil {
			ka.stop()
			delete(o.alive, m.md.Sequence.Stream)
		}
		out[i] = m
	}
	return out
}

// start hands the messages the sequencer let go to handlers.
func (o *ordered) start(msgs []*pulledMsg) {
	for _, m := range msgs {
		o.deps.m.InFlight(1)
		o.eng.dispatch(m)
	}
}

// settling tells the sequencer that m's settlement is about to be sent
// (see sequencer.settling).
func (o *ordered) settling(m *pulledMsg, back bool) {
	if m.md == nil {
		return
	}
	o.mu.Lock()
	o.seq.settling(m.md.Sequence.Stream, back)
	o.mu.Unlock()
}

// settled reports a handled message as done: acked, terminated or handed
// back.
func (o *ordered) settled(m *pulledMsg) {
	if m.md == nil {
		return
	}
	o.mu.Lock()
	o.seq.settled(m.md.Sequence.Stream)
	ready := o.readyLocked()
	o.mu.Unlock()
	o.start(ready)
}

// onRetry waits out a retry's delay where the event is; after a lost pin
// or during a drain it hands the event back at once instead (in order).
func (o *ordered) onRetry(act Action) (bool, Action) {
	if act.Verdict != verdict.Retry {
		return false, act
	}
	if inPlace(act) && o.waitInPlace(act.Delay) {
		return true, act
	}
	return false, handBackAtOnce()
}

// waitInPlace waits d where the event is; meanwhile another event may
// start in its place. It reports false when the wait ended for a drain or
// a lost pin.
func (o *ordered) waitInPlace(d time.Duration) bool {
	o.mu.Lock()
	o.waiting++
	ready := o.readyLocked()
	lost := o.lostCh
	o.mu.Unlock()
	o.start(ready)
	ok := waitFor(d, o.deps.stopping, lost)
	o.mu.Lock()
	o.waiting--
	o.mu.Unlock()
	return ok
}

// letter adds the event's conversation key and the stream sequence of the
// key's next event, if this replica holds it.
func (o *ordered) letter(m *pulledMsg, f *deadletter.Facts) {
	d := o.deps.decode(m)
	if d.ev.ConversationKey == "" || m.md == nil {
		return
	}
	f.OrderedKey = d.ev.ConversationKey
	o.mu.Lock()
	defer o.mu.Unlock()
	if next, ok := o.seq.next(d.ev.ConversationKey, m.md.Sequence.Stream); ok {
		f.NextSeq = next
	}
}

func (o *ordered) gateBound() int { return 0 }

// release hands back everything held that is not running.
func (o *ordered) release() {
	o.mu.Lock()
	msgs := o.takeLocked(o.seq.release())
	o.mu.Unlock()
	o.handBack(msgs)
}

// handBack gives back messages held for their key (or the fence), which
// no handler took up.
func (o *ordered) handBack(msgs []*pulledMsg) {
	for _, m := range msgs {
		o.eng.handBackUnhandled(m)
		o.eng.free()
	}
}

// plan lets an ordered route hold up to its window (it holds messages that
// make no call: waiting for their key, or for the fence), keeps its pin by
// pulling, and pulls while fenced even when route health has it stopped: a
// replica that took the route over must take in every unsettled message
// (the consumer's pause holds new deliveries back meanwhile).
func (o *ordered) plan(base pullPlan, stopped bool) pullPlan {
	o.mu.Lock()
	window, fenced := o.window, o.seq.fenced
	o.mu.Unlock()
	if !stopped || fenced {
		base = pullPlan{limit: window, lowMark: max(1, window/4)}
	}
	base.lookahead = 0 // it holds what it gets anyway
	base.keepPin = orderPinnedTTL / 3
	return base
}

// run reads the consumer's unsettled count while the sequencer is fenced
// (this replica gained the route and may not hold every unsettled message),
// and watches the connection and the process's own stalls, until stop is
// closed.
func (o *ordered) run(stop <-chan struct{}) {
	stalls := make(chan struct{})
	go func() {
		defer close(stalls)
		o.watchStalls(stop)
	}()
	defer func() { <-stalls }()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	reconnects := o.deps.nc.Stats().Reconnects
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if n := o.deps.nc.Stats().Reconnects; n != reconnects || !o.deps.nc.IsConnected() {
				// Whoever holds the pin now, it may not be this replica
				// when the connection is back (a broker restart, a leader
				// change; keep-alives sent meanwhile may be lost): stop
				// starting events, hand back what is held.
				reconnects = n
				o.pinLost("the connection to NATS dropped")
			}
			o.mu.Lock()
			fenced := o.seq.fenced && o.pin != ""
			o.updateMetricsLocked()
			o.mu.Unlock()
			if fenced {
				o.poll()
			}
		}
	}
}

// poll reads the consumer's unsettled count and window, and lets go what
// they free.
func (o *ordered) poll() {
	c := o.deps.consumer()
	if c == nil {
		return
	}
	o.mu.Lock()
	before := o.seq.holding()
	o.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	info, err := c.Info(ctx)
	if err != nil {
		o.deps.log.Debug("reading the unsettled count of an ordered route", "err", err)
		return
	}
	if !o.deps.credible(info) {
		return // an empty answer of a node that does not know the consumer yet
	}
	o.mu.Lock()
	// The fence lifts only once every unsettled message is held here: a
	// window another replica made larger (a rolling change of
	// max_in_flight), or more unsettled than this replica's own window,
	// is adopted, or the fence could never lift.
	own := o.deps.route.MaxAckPending
	o.window = min(max(own, info.Config.MaxAckPending, info.NumAckPending), maxAdoptedWindow*own)
	o.seq.observe(info.NumAckPending, before)
	ready := o.readyLocked()
	o.mu.Unlock()
	o.eng.signal()
	o.start(ready)
}
