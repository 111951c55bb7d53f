package consumer

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/fold"
)

// This file holds what the relay observes about a route: the consumer's
// info (the lag loop), the oldest unacknowledged event, the messages
// waiting out a retry delay, and accepted events (metrics and, when asked,
// a log line).

// watch is what the lag loop keeps between its reads.
type watch struct {
	mu            sync.Mutex       // serialises readLag: guards lagStream and oldestFailing
	lagStream     jetstream.Stream // looked up on first use
	oldestFailing bool             // the last read of the oldest unacknowledged event failed
	retryWaits    retryWaits
	acceptLog     acceptLog
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
	rn.watch.mu.Lock()
	defer rn.watch.mu.Unlock()
	rn.expireRetryWaits()
	cp := rn.bound.cons.Load()
	if cp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(parent, 5*time.Second)
	defer cancel()
	ticket := rn.fleet.beginRead()
	info, err := (*cp).Info(ctx)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		rn.rebind()
	case err != nil:
		if parent.Err() == nil {
			rn.log.Debug("reading consumer info", "err", err)
		}
	case !rn.bound.credible(info):
		rn.log.Debug("ignoring a consumer info answer without cluster information (a node that does not know the consumer yet)")
	default:
		rn.bound.ackFloor.Store(info.AckFloor.Stream)
		rn.m.ConsumerState(info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting, info.Paused)
		rn.fleet.takeRead(ticket, info.Paused, pauseUntil(info), info.AckFloor.Stream)
		rn.readOldestUnacked(ctx, info)
	}
}

// readOldestUnacked sets the age of the route's oldest unacknowledged
// event: the first message the route's filter captures after the
// consumer's ack floor. Everything up to the floor is acknowledged, and a
// captured message right after it cannot be (the floor would have moved
// past it), so that message is the oldest one not yet acknowledged,
// whether it waits for delivery, is in flight or waits out a retry delay.
// One "next by subject" request per filter, only while the consumer has
// anything unsettled; the lowest sequence found wins.
func (rn *runner) readOldestUnacked(ctx context.Context, info *jetstream.ConsumerInfo) {
	if info.NumPending+uint64(max(info.NumAckPending, 0)) == 0 {
		rn.m.SetOldestUnacked(0)
		return
	}
	if rn.watch.lagStream == nil {
		st, err := rn.relay.js.Stream(ctx, rn.route.Stream)
		if err != nil {
			rn.oldestFailed(ctx, err)
			return
		}
		rn.watch.lagStream = st
	}
	filters := rn.route.Subjects
	if len(filters) == 0 {
		filters = []string{">"}
	}
	var oldest *jetstream.RawStreamMsg
	for _, f := range filters {
		m, err := rn.watch.lagStream.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(f))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			// Keep the last value: one unanswered request says nothing
			// about the age.
			rn.oldestFailed(ctx, err)
			return
		}
		if oldest == nil || m.Sequence < oldest.Sequence {
			oldest = m
		}
	}
	if rn.watch.oldestFailing {
		rn.watch.oldestFailing = false
		rn.log.Info("reading the oldest unacknowledged event works again")
	}
	age := 0.0
	if oldest != nil {
		age = max(0, time.Since(oldest.Time).Seconds())
	}
	rn.m.SetOldestUnacked(age)
}

// oldestFailed says once, at warn, that the age cannot be read: a gauge
// that keeps its last value (0 at start) must not pass for a healthy one.
// A missing permission to get messages of the stream is the usual cause.
func (rn *runner) oldestFailed(ctx context.Context, err error) {
	if ctx.Err() != nil || rn.watch.oldestFailing {
		return
	}
	rn.watch.oldestFailing = true
	rn.log.Warn("cannot read the oldest unacknowledged event; agentrelay_oldest_unacked_age_seconds keeps its last value", "err", err)
}

// retryWaits tracks when this replica's delayed naks come due, so that
// messages waiting out a retry delay are counted apart from calls in
// flight. A min-heap of due times, emptied of what is due whenever the lag
// loop reads the consumer: no timer or goroutine per message.
type retryWaits struct {
	mu  sync.Mutex // guards due
	due dueHeap
}

// add records a message handed back until now+delay.
func (w *retryWaits) add(at time.Time) {
	w.mu.Lock()
	heap.Push(&w.due, at)
	w.mu.Unlock()
}

// expire drops what is due at now and returns how many.
func (w *retryWaits) expire(now time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for len(w.due) > 0 && !w.due[0].After(now) {
		heap.Pop(&w.due)
		n++
	}
	return n
}

type dueHeap []time.Time

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].Before(h[j]) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(time.Time)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// expireRetryWaits stops counting the retry delays that ran out.
func (rn *runner) expireRetryWaits() {
	if n := rn.watch.retryWaits.expire(time.Now()); n > 0 {
		rn.m.RetryWaiting(-n)
	}
}

// acceptLog decides which accepted events are logged at info level: none
// (rate 0; they log at debug), all (rate 1), or an even share of them. The
// share is counted, not drawn: with rate 0.25 every fourth accepted event
// is logged, so a low rate still shows a steady trickle.
type acceptLog struct {
	rate float64
	n    atomic.Uint64
}

func (a *acceptLog) sample() bool {
	switch {
	case a.rate <= 0:
		return false
	case a.rate >= 1:
		return true
	}
	n := float64(a.n.Add(1))
	return math.Floor(n*a.rate) > math.Floor((n-1)*a.rate)
}

// accepted records an event the API accepted and returns the level to log
// it at.
func (rn *runner) accepted(d *delivery) slog.Level {
	rn.m.Accepted(float64(time.Now().UnixNano())/1e9, isReplay(d.msg.Headers()))
	if rn.watch.acceptLog.sample() {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// isReplay reports whether a message was republished by `dlq replay`,
// which marks it with headers under deadletter.HeaderReplayPrefix.
func isReplay(h nats.Header) bool {
	for k := range h {
		if fold.HasPrefix(k, deadletter.HeaderReplayPrefix) {
			return true
		}
	}
	return false
}
