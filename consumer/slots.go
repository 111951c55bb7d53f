package consumer

import "time"

// slots is the accounting of one route's in-flight slots on one replica:
// messages being handled (active), messages asked for by pull requests that
// have not arrived (requested), and the requests themselves. The pull loop
// asks for exactly the free slots, so a message is only asked for when a
// slot is waiting for it: nothing sits in a client buffer while its AckWait
// runs out.
//
// The accounting follows nats.go's Consume: requested falls by one per
// delivery, and by the unfilled rest of a request when the server ends it
// with a status (408 on expiry and 409 batch completed carry
// Nats-Pending-Messages; a refused request is known by its reply token).
// When requests may have been lost (no heartbeat for two intervals, a
// reconnect, a leadership change, or every request past its expiry without
// its status) the count is reset and the free slots are asked for again. If
// the old requests were alive after all, the route briefly has more in
// flight than its limit; it never loses a message.
//
// slots does no I/O and reads no clock: the caller passes now and holds the
// engine's lock.
type slots struct {
	expiry    time.Duration // lifetime of one pull request
	heartbeat time.Duration // idle heartbeat asked of the server

	active    int // messages being handled
	requested int // messages asked for and not yet arrived
	ahead     int // messages that arrived before a slot was free, waiting for one
	limit     int // the in-flight limit of the latest free()
	// holdAll makes every delivery active, even above the limit: an
	// ordered route's sequencer is its waiting room (it must see every
	// message it holds, to keep each key in order), so nothing may wait
	// ahead of it. The server's max_ack_pending still bounds what arrives.
	holdAll bool

	next       uint64
	open       map[uint64]openPull // by reply token: to attribute an ending or a refusal
	lastSent   time.Time           // when the latest request went out
	lastExpiry time.Time           // when the latest request expires at the server
	lastSeen   time.Time           // the latest delivery or status
	reconnects uint64              // the connection's reconnect count when the requests were made
	retryAt    time.Time           // no pulls before this (after a refusal)
	retryDelay time.Duration
}

type openPull struct {
	n       int
	left    int // messages it may still deliver
	sent    time.Time
	expires time.Time
	pin     string // the pin id the request presented (an ordered route's)
}

func newSlots(expiry, heartbeat time.Duration) slots {
	return slots{expiry: expiry, heartbeat: heartbeat, open: map[uint64]openPull{}}
}

// Bounds of the wait after a refused pull request.
const (
	minRefusedWait = 100 * time.Millisecond
	maxRefusedWait = 5 * time.Second
)

// free returns how many messages to ask for now with up to limit in
// flight, and up to lookahead more asked for ahead of time: a slot freed
// by a settle is refilled from a message already here instead of waiting a
// pull's round trip. While requests are outstanding it waits for lowMark
// free slots, so pulls are not sent one message at a time. wait > 0 says
// pulls must wait that long after a refusal.
func (s *slots) free(now time.Time, limit, lowMark, lookahead int) (n int, wait time.Duration) {
	s.limit = limit
	if now.Before(s.retryAt) {
		return 0, s.retryAt.Sub(now)
	}
	n = limit + lookahead - s.active - s.requested - s.ahead
	if s.requested > 0 && n < min(lowMark, limit) {
		return 0, 0
	}
	return max(n, 0), 0
}

// book records n messages as requested.
func (s *slots) book(n int) { s.requested += n }

// release gives back n requested messages that will not arrive.
func (s *slots) release(n int) { s.requested = max(s.requested-n, 0) }

// sent records a pull request for n messages (already booked), presenting
// pin, and returns its reply token. reconnects is the connection's
// reconnect count.
func (s *slots) sent(n int, now time.Time, reconnects uint64, pin string) uint64 {
	s.next++
	if s.requested == n { // nothing else outstanding: the liveness clock starts now
		s.lastSeen = now
		s.reconnects = reconnects
	}
	s.open[s.next] = openPull{n: n, left: n, sent: now, expires: now.Add(s.expiry), pin: pin}
	s.lastSent = now
	s.lastExpiry = now.Add(s.expiry)
	return s.next
}

// fill attributes a delivery to the request it filled. A delivery arrives
// on the message's own subject, not the request's reply token, but the
// server serves a client's pull requests first come, first served: the
// delivery filled the oldest open request with room left. A request that is
// full is closed (the server sends no status for it). A request past its
// expiry is not one the server still serves, whether or not its status
// has come. ok is false when no open request had room (one from before a
// reset).
func (s *slots) fill(now time.Time) (req openPull, ok bool) {
	var token uint64
	for t, r := range s.open {
		if r.left > 0 && now.Before(r.expires) && (!ok || r.sent.Before(req.sent) || r.sent.Equal(req.sent) && t < token) {
			req, token, ok = r, t, true
		}
	}
	if !ok {
		return req, false
	}
	req.left--
	if req.left == 0 {
		delete(s.open, token)
	} else {
		s.open[token] = req
	}
	return req, true
}

// request returns what request token was sent with; ok is false for a
// token it no longer knows (ended, or from before a reset).
func (s *slots) request(token uint64) (req openPull, ok bool) {
	req, ok = s.open[token]
	return req, ok
}

// unsent forgets a request that could not be sent; the caller releases its
// booking.
func (s *slots) unsent(token uint64) { delete(s.open, token) }

// delivered moves a message from requested to active (handled), or to
// ahead when every slot is taken (it waits for one); during a drain
// (handle false) it is held for hand-back. It reports whether the message
// waits.
func (s *slots) delivered(now time.Time, handle bool) (waits bool) {
	s.lastSeen = now
	s.retryDelay = 0
	s.requested = max(s.requested-1, 0)
	switch {
	case !handle:
		return false
	case s.limit > 0 && s.active >= s.limit && !s.holdAll:
		s.ahead++
		return true
	}
	s.active++
	return false
}

// done frees the slot of a settled message. It reports whether a message
// that waits ahead takes the slot.
func (s *slots) done() (next bool) {
	s.active--
	if s.ahead > 0 && s.active < max(s.limit, 1) {
		s.ahead--
		s.active++
		return true
	}
	return false
}

// dropAhead forgets the messages that wait ahead (handed back in a drain).
func (s *slots) dropAhead() { s.ahead = 0 }

// ended applies a status message of the request with token: what it says
// of the accounting. It reports how many slots it released and whether the
// count was reset.
func (s *slots) ended(token uint64, st pullStatus, pending int, now time.Time) (released int, reset bool) {
	s.lastSeen = now
	req, known := s.open[token]
	switch st {
	case statusHeartbeat:
		s.retryDelay = 0
	case statusEnded:
		// A request from before a reset is no longer counted in
		// requested: releasing its rest would undercount the new ones.
		if known {
			released = pending
			delete(s.open, token)
			s.retryDelay = 0
		}
	case statusLost, statusConsumerDeleted:
		s.reset()
		return 0, true
	case statusPinLost:
		// Refused because another replica owns the route: ask again at
		// once, without the pin, to stand by.
		if known {
			released = req.n
			delete(s.open, token)
		}
	default: // refused: nothing of it was filled
		if known {
			released = req.n
			delete(s.open, token)
		}
		s.retryDelay = min(max(2*s.retryDelay, minRefusedWait), maxRefusedWait)
		s.retryAt = now.Add(s.retryDelay)
	}
	s.release(released)
	return released, false
}

// check reports why the outstanding requests may have been lost, if they
// may (and then resets the count): a reconnect since they were sent, no
// delivery or heartbeat for two heartbeat intervals, or all of them past
// their expiry without the status that ends them. It also forgets
// requests long expired.
func (s *slots) check(now time.Time, reconnects uint64) (why string) {
	if s.requested > 0 {
		switch {
		case reconnects != s.reconnects:
			why = "reconnected"
		case now.Sub(s.lastSeen) > 2*s.heartbeat:
			why = "no heartbeat"
		case now.After(s.lastExpiry.Add(2 * time.Second)):
			why = "requests expired without a status"
		}
	}
	if why != "" {
		s.reset()
	}
	for t, r := range s.open {
		if now.After(r.expires.Add(5 * time.Second)) {
			delete(s.open, t)
		}
	}
	return why
}

func (s *slots) reset() {
	s.requested = 0
	clear(s.open)
}
