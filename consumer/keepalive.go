package consumer

import (
	"sync"
	"time"
)

// keepAlive is one message kept alive: JetStream is told it is still being
// worked on, every third of AckWait, so a slow call, a held probe or a
// dead-letter publish does not get it redelivered to another replica
// meanwhile. A third leaves room for one lost keep-alive.
type keepAlive struct {
	msg  inbound
	list *keepAlives

	// mu orders InProgress before stop: none is sent once stop returns
	// (an InProgress after a nak would restart the message's ack wait).
	mu      sync.Mutex
	stopped bool

	// Guarded by keepAlives.mu.
	due        time.Time
	prev, next *keepAlive
}

// keepAlives holds a runner's kept-alive messages in one list, swept by one
// timer, rather than a timer per message: a message is added and removed
// once per delivery, and on a route of short calls the timers' heap
// operations were a few per cent of the worker's CPU.
type keepAlives struct {
	every  time.Duration
	onFail func() // an InProgress could not be sent

	mu    sync.Mutex // guards head (and every entry's due, prev and next), timer and armed
	head  keepAlive  // sentinel of a circular list
	timer *time.Timer
	armed bool
}

func newKeepAlives(every time.Duration, onFail func()) *keepAlives {
	k := &keepAlives{every: every, onFail: onFail}
	k.head.prev, k.head.next = &k.head, &k.head
	return k
}

// add keeps msg alive until stop is called on what it returns.
func (k *keepAlives) add(msg inbound) *keepAlive {
	ka := &keepAlive{msg: msg, list: k}
	k.mu.Lock()
	ka.due = time.Now().Add(k.every)
	ka.prev, ka.next = k.head.prev, &k.head
	k.head.prev.next, k.head.prev = ka, ka
	if !k.armed {
		k.armed = true
		if k.timer == nil {
			k.timer = time.AfterFunc(k.sweepEvery(), k.sweep)
		} else {
			k.timer.Reset(k.sweepEvery())
		}
	}
	k.mu.Unlock()
	return ka
}

// sweepEvery is a quarter of the interval: an InProgress goes out between
// one and one and a quarter thirds of AckWait after the last, so that two
// in a row still fall within AckWait when one between them is lost.
func (k *keepAlives) sweepEvery() time.Duration { return k.every / 4 }

// stop ends the keep-alive; no InProgress is sent for the message after
// stop returns.
func (ka *keepAlive) stop() {
	k := ka.list
	ka.mu.Lock()
	ka.stopped = true
	ka.mu.Unlock()
	k.mu.Lock()
	if ka.next != nil {
		ka.prev.next, ka.next.prev = ka.next, ka.prev
		ka.prev, ka.next = nil, nil
	}
	k.mu.Unlock()
}

// sweep sends InProgress for every message due, and runs again while any
// message is kept alive.
func (k *keepAlives) sweep() {
	now := time.Now()
	var due []*keepAlive
	k.mu.Lock()
	for ka := k.head.next; ka != &k.head; ka = ka.next {
		if !ka.due.After(now) {
			due = append(due, ka)
			ka.due = now.Add(k.every)
		}
	}
	if k.head.next != &k.head {
		k.timer.Reset(k.sweepEvery())
	} else {
		k.armed = false
	}
	k.mu.Unlock()
	for _, ka := range due {
		ka.mu.Lock()
		if !ka.stopped {
			if err := ka.msg.InProgress(); err != nil {
				k.onFail()
			}
		}
		ka.mu.Unlock()
	}
}
