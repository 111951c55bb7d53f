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
// The puller does the I/O; the accounting is the engine's slots, and what
// a pull says of an ordered route's pin goes to the pins it is given.
type puller struct {
	e         *engine
	nc        *nats.Conn
	subject   string // the consumer's pull API subject
	inbox     string // requests reply to inbox.<token>
	expiry    time.Duration
	heartbeat time.Duration
	pins      pins
	sub       *nats.Subscription
}

// pins is what the puller tells of a priority group's pin, and asks of it:
// an ordered route's consumer pins one replica (see ordered.go). An
// unordered route's is noPins.
type pins interface {
	// group is the priority group to pull from and the pin id to present
	// ("" for none).
	group() (group, pin string)
	// heartbeat: the server took a request sent at sent presenting pin
	// (a heartbeat for it arrived).
	heartbeat(pin string, sent time.Time)
	// delivered: a delivery carried pin id id; it filled a request sent at
	// sent presenting pin ("" when it presented none, and was pinned).
	delivered(id, pin string, sent time.Time)
	// lost: the server refused a request for the pin (423), or every
	// request may be gone (a leadership change): another replica may hold
	// the pin now.
	lost()
}

// noPins is an unordered route's: no priority group.
type noPins struct{}

func (noPins) group() (string, string)             { return "", "" }
func (noPins) heartbeat(string, time.Time)         {}
func (noPins) delivered(string, string, time.Time) {}
func (noPins) lost()                               {}

// pullStatus is what a status message on the pull subscription means.
type pullStatus uint8

// Pull statuses.
const (
	statusHeartbeat       pullStatus = iota + 1 // 100: the request is alive
	statusEnded                                 // 408 expired, 409 batch completed or over max bytes: the rest is in Nats-Pending-Messages
	statusLost                                  // 409 leadership change: every outstanding request is gone
	statusConsumerDeleted                       // 409 consumer deleted
	statusNoResponders                          // 503: JetStream or the consumer is not there
	statusPinLost                               // 423: another replica holds the ordered route's pin
	statusRefused                               // anything else (400, 404, 409 exceeded MaxWaiting or a limit): nothing of the request was filled
)

// statusOf turns a status message's code and description into what it
// means, in one place; nothing else parses a status.
func statusOf(code, desc string) pullStatus {
	desc = strings.ToLower(desc)
	switch {
	case code == "100":
		return statusHeartbeat
	case code == "408", code == "409" && (strings.Contains(desc, "batch completed") || strings.Contains(desc, "exceeds maxbytes")):
		return statusEnded
	case code == "409" && strings.Contains(desc, "leadership change"):
		return statusLost
	case code == "409" && strings.Contains(desc, "consumer deleted"):
		return statusConsumerDeleted
	case code == "503":
		return statusNoResponders
	case code == "423":
		return statusPinLost
	}
	return statusRefused
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

func newPuller(e *engine, js jetstream.JetStream, route Route, o Options, p pins) *puller {
	nc := js.Conn()
	pl := &puller{
		e:         e,
		nc:        nc,
		subject:   apiPrefix(js) + "CONSUMER.MSG.NEXT." + route.Stream + "." + route.Durable,
		inbox:     nc.NewInbox(),
		expiry:    o.PullExpiry,
		heartbeat: o.PullHeartbeat,
		pins:      p,
	}
	if g, _ := p.group(); g != "" {
		// The owner of an ordered route keeps its pin by pulling: a pull
		// must go out well within the pinned TTL, even when idle.
		pl.expiry = max(min(pl.expiry, orderPinnedTTL/2), 2*pl.heartbeat+time.Second)
	}
	return pl
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
	group, pin := p.pins.group()
	token := p.e.sent(n, p.nc.Stats().Reconnects, pin)
	body := make([]byte, 0, 80)
	body = append(body, `{"batch":`...)
	body = strconv.AppendInt(body, int64(n), 10)
	body = append(body, `,"expires":`...)
	body = strconv.AppendInt(body, p.expiry.Nanoseconds(), 10)
	body = append(body, `,"idle_heartbeat":`...)
	body = strconv.AppendInt(body, p.heartbeat.Nanoseconds(), 10)
	if group != "" {
		body = strconv.AppendQuote(append(body, `,"group":`...), group)
		if pin != "" {
			body = strconv.AppendQuote(append(body, `,"id":`...), pin)
		}
	}
	body = append(body, '}')
	err := p.nc.PublishRequest(p.subject, p.inbox+"."+strconv.FormatUint(token, 10), body)
	if err != nil {
		p.e.unsent(token)
	}
	return err
}

// onMsg handles everything the subscription receives, on its own
// goroutine: deliveries go to the engine without blocking, statuses settle
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
		p.e.delivered(newPulledMsg(m, p.nc), m.Header.Get("Nats-Pin-Id"))
		return
	}
	if code := m.Header.Get("Status"); code != "" {
		p.onStatus(m, replyToken(m.Subject), code) // a status comes on inbox.<token>
		return
	}
	p.e.log.Warn("ignored a message on the pull subscription that is neither a delivery nor a status", "subject", m.Subject)
}

// replyToken is the request token a status on inbox.<token> answers.
func replyToken(subject string) uint64 {
	token, _ := strconv.ParseUint(subject[strings.LastIndexByte(subject, '.')+1:], 10, 64)
	return token
}

// onStatus handles a status message of a pull request.
func (p *puller) onStatus(m *nats.Msg, token uint64, code string) {
	e := p.e
	desc := m.Header.Get("Description")
	st := statusOf(code, desc)
	if st == statusHeartbeat {
		if req, ok := e.request(token); ok {
			p.pins.heartbeat(req.pin, req.sent)
		}
	}
	released, reset := e.ended(token, st, pendingMessages(m))

	switch {
	case st == statusHeartbeat, st == statusEnded:
	case st == statusPinLost:
		p.pins.lost()
	case reset:
		e.m.PullFailed()
		e.log.Debug("pull requests ended by the server; asking again", "status", code, "description", desc)
		p.pins.lost() // a new consumer leader may pin another replica
		if st == statusConsumerDeleted {
			e.rebind()
		}
	default:
		e.m.PullFailed()
		e.log.Warn("pull request refused", "status", code, "description", desc, "released", released)
		if st == statusNoResponders {
			e.rebind() // the consumer (or JetStream) is gone
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
