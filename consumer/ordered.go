package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ordered runs an ordered route's deliveries through the sequencer: each is
// held (kept alive) until the sequencer lets it go, handled, and reported
// back when settled so the next of its key may go.
//
// The route's consumer has a pinned priority group, so one replica owns it
// at a time; the puller tracks the pin. When this replica loses the pin it
// hands back what it holds (running handlers hand theirs back instead of
// retrying), and when it gains the pin the sequencer waits for whatever the
// previous owner still held.
type ordered struct {
	rn *runner

	mu    sync.Mutex
	seq   sequencer
	alive map[uint64]*keepAlive // held messages not yet running, kept alive
	pin   string                // the pin id this replica holds, "" when none
	// pinned is canceled when the pin is lost (replaced on gain): the
	// calls of the route are its children.
	pinned  context.Context
	unpin   context.CancelFunc
	polling bool

	// Calls under way, bounded by route health's limit (AIMD under 429):
	// an ordered event is retried in place, not naked, so the pull loop's
	// in-flight limit does not bound its calls (see callSlot).
	callMu    sync.Mutex
	calls     int
	callFreed chan struct{} // closed and replaced when a call ends
}

func newOrdered(rn *runner) *ordered {
	pinned, unpin := context.WithCancel(context.Background())
	unpin() // no pin yet
	return &ordered{rn: rn, seq: newSequencer(), alive: map[uint64]*keepAlive{}, pinned: pinned, unpin: unpin, callFreed: make(chan struct{})}
}

// callSlot waits until a call may be made: until fewer calls than route
// health allows (AIMD cuts the limit on a 429) are under way on this
// replica. An unordered route gets there through its pulls: a 429 naks the
// message and fewer are pulled. An ordered route holds every event it has
// and retries each in place, so its calls are bounded here, each attempt
// anew. It returns the function that ends the call, or ctx's error.
func (o *ordered) callSlot(ctx context.Context) (end func(), err error) {
	for {
		limit := max(1, min(o.rn.limit, o.rn.health.state(time.Now()).Limit))
		o.callMu.Lock()
		if o.calls < limit {
			o.calls++
			o.callMu.Unlock()
			return o.endCall, nil
		}
		// The limit only grows on a success, which ends a call: waiting
		// for a call to end is enough.
		freed := o.callFreed
		o.callMu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (o *ordered) endCall() {
	o.callMu.Lock()
	o.calls--
	close(o.callFreed)
	o.callFreed = make(chan struct{})
	o.callMu.Unlock()
}

// conversationKey is the key an ordered route orders msg by: "" for a
// message without one, or that breaks the contract (it is dead-lettered
// without a call, so it needs no place in a conversation).
func (o *ordered) conversationKey(msg inbound) string {
	ev, reason, _ := o.rn.route.Contract.Decode(msg.Data(), msg.Headers())
	if reason != "" {
		return ""
	}
	return ev.ConversationKey
}

// deliver takes a delivered message (its slot is already active).
func (o *ordered) deliver(msg *pulledMsg) {
	md, err := msg.Metadata()
	if err != nil {
		o.rn.m.InFlight(1) // handle's done counts it out
		o.rn.dispatch(msg) // handle logs it and leaves it to JetStream
		return
	}
	key := o.conversationKey(msg)
	o.mu.Lock()
	if o.seq.add(md.Sequence.Stream, key, msg, time.Now()) {
		o.mu.Unlock()
		// Held already (a redelivery after its ack wait ran out) or
		// settled: the copy in hand settles it.
		o.rn.free()
		return
	}
	o.alive[md.Sequence.Stream] = o.rn.alive.add(msg)
	ready := o.readyLocked()
	o.mu.Unlock()
	o.start(ready)
}

// readyLocked takes what may start now: at most max_in_flight run at once
// (an ordered route holds more than it runs).
func (o *ordered) readyLocked() []*pulledMsg { return o.takeLocked(o.seq.ready(o.rn.limit)) }

// takeLocked turns the sequencer's items into messages leaving the hold:
// their keep-alives stop (a handler keeps them alive, or they go back).
func (o *ordered) takeLocked(items []any) []*pulledMsg {
	out := make([]*pulledMsg, len(items))
	for i, it := range items {
		m := it.(*pulledMsg)
		md, _ := m.Metadata()
		if ka := o.alive[md.Sequence.Stream]; ka != nil {
			ka.stop()
			delete(o.alive, md.Sequence.Stream)
		}
		out[i] = m
	}
	return out
}

// start hands the messages the sequencer let go to handlers, unless the
// connection is down: then this replica may no longer own the route, and
// they go back instead.
func (o *ordered) start(msgs []*pulledMsg) {
	if len(msgs) > 0 && !o.rn.p.nc.IsConnected() {
		o.mu.Lock()
		for _, m := range msgs {
			md, _ := m.Metadata()
			o.seq.settled(md.Sequence.Stream)
		}
		o.mu.Unlock()
		o.handBack(msgs)
		o.pinLost()
		return
	}
	for _, m := range msgs {
		o.rn.m.InFlight(1)
		o.rn.dispatch(m)
	}
}

// settled reports a handled message as done: acked, terminated or handed
// back.
func (o *ordered) settled(md *jetstream.MsgMetadata) {
	o.mu.Lock()
	o.seq.settled(md.Sequence.Stream)
	ready := o.readyLocked()
	o.mu.Unlock()
	o.start(ready)
}

// next is the stream sequence of the next event of key after md, if this
// replica holds it (for the dead letter of an ordered event).
func (o *ordered) next(key string, md *jetstream.MsgMetadata) (uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seq.next(key, md.Sequence.Stream)
}

// pinLost is told by the puller that the server gave the route to another
// replica: hand back everything held that is not running; running handlers
// see lostPin and hand theirs back instead of retrying.
func (o *ordered) pinLost() {
	o.mu.Lock()
	if o.pin == "" {
		o.mu.Unlock()
		return
	}
	o.pin = ""
	o.unpin()
	msgs := o.releaseLocked()
	o.mu.Unlock()
	if len(msgs) > 0 {
		o.rn.log.Warn("ordered route handed to another replica; handing back the events held here", "count", len(msgs))
	}
	o.handBack(msgs)
}

// pinSeen is told the pin id of a delivery. A new one means this replica
// now owns the route.
func (o *ordered) pinSeen(id string) {
	o.mu.Lock()
	if id == "" || id == o.pin {
		o.mu.Unlock()
		return
	}
	gained := o.pin == ""
	o.pin = id
	if gained {
		o.pinned, o.unpin = context.WithCancel(context.Background())
	}
	o.mu.Unlock()
	if gained {
		o.rn.log.Info("this replica owns the ordered route now")
	}
	o.poll()
}

// callContext is ctx, also canceled when the pin is lost: the next owner
// may be given this event once its ack wait runs out, and two replicas must
// never call for one key at once.
func (o *ordered) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	o.mu.Lock()
	pinned := o.pinned
	o.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(pinned, cancel) // no goroutine per call
	return ctx, func() { stop(); cancel() }
}

// lostPin returns a channel closed when the pin is lost.
func (o *ordered) lostPin() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pinned.Done()
}

// isFenced reports whether this replica waits to hold every unsettled
// message before it starts any.
func (o *ordered) isFenced() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seq.fenced
}

// pinID is the pin to present in pull requests.
func (o *ordered) pinID() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pin
}

// drain hands back everything held that is not running.
func (o *ordered) drain() {
	o.mu.Lock()
	msgs := o.releaseLocked()
	o.mu.Unlock()
	o.handBack(msgs)
}

func (o *ordered) releaseLocked() []*pulledMsg { return o.takeLocked(o.seq.release()) }

func (o *ordered) handBack(msgs []*pulledMsg) {
	for _, m := range msgs {
		o.rn.giveBack(m)
		o.rn.free()
	}
}

// run reads the consumer's unsettled count while the sequencer is fenced
// (this replica gained the route and may not hold every unsettled message),
// until stop is closed.
func (o *ordered) run(stop <-chan struct{}) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	reconnects := o.rn.p.nc.Stats().Reconnects
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if n := o.rn.p.nc.Stats().Reconnects; n != reconnects || !o.rn.p.nc.IsConnected() {
				// Whoever holds the pin now, it may not be this replica
				// when the connection is back (a broker restart, a leader
				// change; keep-alives sent meanwhile may be lost): stop
				// starting events, hand back what is held.
				reconnects = n
				o.pinLost()
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

// poll reads the consumer's unsettled count and lets go what it frees.
func (o *ordered) poll() {
	cp := o.rn.cons.Load()
	if cp == nil {
		return
	}
	o.mu.Lock()
	before := o.seq.holding()
	o.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	info, err := (*cp).Info(ctx)
	if err != nil {
		o.rn.log.Debug("reading the unsettled count of an ordered route", "err", err)
		return
	}
	o.mu.Lock()
	o.seq.observe(info.NumAckPending, before)
	ready := o.readyLocked()
	o.mu.Unlock()
	o.start(ready)
}

func (o *ordered) updateMetricsLocked() {
	keys, oldest := o.seq.blocked()
	age := 0.0
	if !oldest.IsZero() {
		age = time.Since(oldest).Seconds()
	}
	o.rn.m.OrderedBlocked(keys, age)
}
