package consumer

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// puller asks JetStream for a route's messages on one long-lived
// subscription.
//
// nats.go's Fetch would serve, but it ties each pull request to a
// subscription of its own and drops that subscription, and whatever is
// still on its way to it, when it gives up on the request: on a missed
// heartbeat (which a CPU-starved process can miss while the request is
// alive and well) or when canceled. The server still delivers to the
// abandoned request; those messages then sit unacknowledged until AckWait,
// and once they fill MaxAckPending the route stalls. Here the subscription
// outlives every request, so giving up on a request only means asking
// again: nothing delivered is ever dropped.
//
// Accounting is the same as nats.go's Consume: requested counts the
// messages asked for and not yet delivered; it falls by one per delivery,
// and by the unfilled rest of a request when the server ends it with a
// status (408 on expiry and 409 batch completed carry
// Nats-Pending-Messages; a rejected request, such as 409 Exceeded
// MaxWaiting, is known by its reply token). When requests may have been
// lost (no heartbeat for two intervals, a reconnect, a leadership change,
// or every request past its expiry without its status) the count is reset
// and the free slots are asked for again. If the old requests were alive
// after all, the route briefly has more in flight than its limit; it never
// loses a message.
//
// All fields but the constants are guarded by the runner's mutex.
type puller struct {
	rn        *runner
	nc        *nats.Conn
	subject   string // the consumer's pull API subject
	inbox     string // requests reply to inbox.<token>
	expiry    time.Duration
	heartbeat time.Duration
	sub       *nats.Subscription

	next       uint64
	open       map[uint64]openPull // by reply token: to attribute a rejection
	lastExpiry time.Time           // when the latest request expires at the server
	lastSeen   time.Time           // the latest delivery or status
	reconnects uint64              // the connection's count when the requests were made
	retryAt    time.Time           // no pulls before this (after a refusal)
	retryDelay time.Duration
}

type openPull struct {
	n       int
	expires time.Time
}

// apiPrefix is the JetStream API prefix js sends requests to.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

func newPuller(rn *runner) *puller {
	nc := rn.relay.js.Conn()
	return &puller{
		rn:        rn,
		nc:        nc,
		subject:   apiPrefix(rn.relay.js) + "CONSUMER.MSG.NEXT." + rn.route.Stream + "." + rn.route.Durable,
		inbox:     nc.NewInbox(),
		expiry:    rn.relay.opts.PullExpiry,
		heartbeat: rn.relay.opts.PullHeartbeat,
		open:      map[uint64]openPull{},
	}
}

// start subscribes. Deliveries are bounded by the pull requests, so the
// subscription's own pending limits are lifted: a slow-consumer drop here
// would be a lost delivery.
func (p *puller) start() error {
	sub, err := p.nc.Subscribe(p.inbox+".*", p.onMsg)
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	p.sub = sub
	return nil
}

// stop drains the subscription: what is already on its way is still
// handled (held for hand-back, during a drain).
func (p *puller) stop(timeout time.Duration) {
	if p.sub == nil {
		return
	}
	if err := p.sub.Drain(); err != nil {
		return
	}
	deadline := time.Now().Add(timeout)
	for p.sub.IsValid() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// request sends one pull request for n messages. The caller has booked n
// as requested; on error it must release them.
func (p *puller) request(n int) error {
	now := time.Now()
	rn := p.rn
	rn.mu.Lock()
	p.next++
	token := p.next
	if rn.requested == n { // nothing else outstanding: the liveness clock starts now
		p.lastSeen = now
		p.reconnects = p.nc.Stats().Reconnects
	}
	p.open[token] = openPull{n: n, expires: now.Add(p.expiry)}
	p.lastExpiry = now.Add(p.expiry)
	rn.mu.Unlock()

	body := make([]byte, 0, 80)
	body = append(body, `{"batch":`...)
	body = strconv.AppendInt(body, int64(n), 10)
	body = append(body, `,"expires":`...)
	body = strconv.AppendInt(body, p.expiry.Nanoseconds(), 10)
	body = append(body, `,"idle_heartbeat":`...)
	body = strconv.AppendInt(body, p.heartbeat.Nanoseconds(), 10)
	body = append(body, '}')
	err := p.nc.PublishRequest(p.subject, p.inbox+"."+strconv.FormatUint(token, 10), body)
	if err != nil {
		rn.mu.Lock()
		delete(p.open, token)
		rn.mu.Unlock()
	}
	return err
}

// onMsg handles everything the subscription receives, on its own
// goroutine: deliveries go to handlers without blocking, statuses settle
// the accounting.
//
// A delivery is told from a status by its reply subject: every delivery
// has a $JS.ACK reply to acknowledge it on, a status has none. (Going by
// an empty body and a Status header, as nats.go does, would take a
// producer's empty message that happens to carry a Status header for a
// status: it would never be handed to a handler, never settled, and be
// redelivered every AckWait for ever.)
func (p *puller) onMsg(m *nats.Msg) {
	if strings.HasPrefix(m.Reply, "$JS.ACK.") {
		p.rn.delivered(p, &pulledMsg{msg: m, nc: p.nc})
		return
	}
	if code := m.Header.Get("Status"); code != "" {
		p.onStatus(m, code)
		return
	}
	p.rn.log.Warn("ignored a message on the pull subscription that is neither a delivery nor a status", "subject", m.Subject)
}

// onStatus handles a status message of a pull request.
func (p *puller) onStatus(m *nats.Msg, code string) {
	rn := p.rn
	now := time.Now()
	token, _ := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64)
	desc := strings.ToLower(m.Header.Get("Description"))

	rn.mu.Lock()
	p.lastSeen = now
	req, known := p.open[token]
	release := 0
	reset := false
	switch {
	case code == "100": // idle heartbeat: the request is alive
		p.retryDelay = 0
	case code == "408", code == "409" && (strings.Contains(desc, "batch completed") || strings.Contains(desc, "exceeds maxbytes")):
		// Ended, with the unfilled rest in a header. A request from
		// before a reset is no longer counted in requested: releasing
		// its rest would undercount the new requests.
		if known {
			release = pendingMessages(m)
			delete(p.open, token)
			p.retryDelay = 0
		}
	case code == "409" && (strings.Contains(desc, "leadership change") || strings.Contains(desc, "consumer deleted")):
		reset = true
	default:
		// Refused outright (400, 404, 409 Exceeded MaxWaiting or a
		// request limit, 503 no responders): nothing of it was filled.
		if known {
			release = req.n
			delete(p.open, token)
		}
		p.retryDelay = min(max(2*p.retryDelay, 100*time.Millisecond), 5*time.Second)
		p.retryAt = now.Add(p.retryDelay)
	}
	if reset {
		p.resetLocked()
	} else {
		rn.requested = max(rn.requested-release, 0)
	}
	rn.mu.Unlock()
	rn.signal()

	switch {
	case code == "100", code == "408":
	case reset:
		rn.m.PullFailed()
		rn.log.Debug("pull requests ended by the server; asking again", "status", code, "description", desc)
		if strings.Contains(desc, "consumer deleted") {
			rn.rebind()
		}
	case release > 0 || !known:
		rn.m.PullFailed()
		rn.log.Warn("pull request refused", "status", code, "description", desc)
		if code == "503" {
			rn.rebind() // no responders: the consumer (or JetStream) is gone
		}
	}
}

// pendingMessages reads Nats-Pending-Messages from a status message.
func pendingMessages(m *nats.Msg) int {
	n, err := strconv.Atoi(m.Header.Get("Nats-Pending-Messages"))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// check resets the accounting when the outstanding requests may have been
// lost: no delivery or heartbeat for two heartbeat intervals, a reconnect
// since they were sent, or all of them past their expiry without the
// status that ends them. It also forgets requests long expired.
func (p *puller) check(now time.Time) {
	rn := p.rn
	rn.mu.Lock()
	var why string
	if rn.requested > 0 {
		switch {
		case p.nc.Stats().Reconnects != p.reconnects:
			why = "reconnected"
		case now.Sub(p.lastSeen) > 2*p.heartbeat:
			why = "no heartbeat"
		case now.After(p.lastExpiry.Add(2 * time.Second)):
			why = "requests expired without a status"
		}
	}
	if why != "" {
		p.resetLocked()
	}
	for t, r := range p.open {
		if now.After(r.expires.Add(5 * time.Second)) {
			delete(p.open, t)
		}
	}
	rn.mu.Unlock()
	if why != "" {
		rn.m.PullFailed()
		rn.log.Debug("pull requests may be lost; asking again", "why", why)
		rn.signal()
	}
}

func (p *puller) resetLocked() {
	p.rn.requested = 0
	clear(p.open)
}

// waitBeforePull reports how long pulls must wait after a refusal. The
// backoff itself only resets on evidence that requests are being served (a
// delivery, a heartbeat, a request ending normally), so a server that keeps
// refusing is asked less and less often, up to every 5 s.
func (p *puller) waitBeforePull(now time.Time) time.Duration {
	if now.Before(p.retryAt) {
		return p.retryAt.Sub(now)
	}
	return 0
}
