package consumer

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Acknowledgement bodies (the JetStream protocol).
var (
	ackAck      = []byte("+ACK")
	ackNak      = []byte("-NAK")
	ackProgress = []byte("+WPI")
	ackTerm     = []byte("+TERM")
)

// inbound is a message delivered to the relay, as the runner uses it: read,
// kept alive, settled once. pulledMsg is the relay's own; a jetstream.Msg
// is one too.
type inbound interface {
	Metadata() (*jetstream.MsgMetadata, error)
	Data() []byte
	Headers() nats.Header
	Subject() string
	Ack() error
	Nak() error
	NakWithDelay(delay time.Duration) error
	InProgress() error
	TermWithReason(reason string) error
}

// pulledMsg is a message delivered to the relay's own pull subscription,
// settled with the same protocol as nats.go's jetstream.Msg:
// acknowledgements are published to the message's reply subject. The relay
// needs its own type because it pulls on one long-lived subscription per
// route rather than through nats.go's Fetch, whose messages cannot be made
// from a *nats.Msg.
type pulledMsg struct {
	msg  *nats.Msg
	nc   *nats.Conn
	ackd atomic.Bool
	// The delivery's metadata, parsed once: the runner, the sequencer and
	// the handler each need it.
	md    *jetstream.MsgMetadata
	mdErr error
	// dec is the body read once (see runner.decode), by whoever needs it
	// first: the ordered sequencer at delivery, else the handler.
	dec *decoded
}

func newPulledMsg(msg *nats.Msg, nc *nats.Conn) *pulledMsg {
	m := &pulledMsg{msg: msg, nc: nc}
	m.md, m.mdErr = parseMetadata(msg)
	return m
}

var _ inbound = (*pulledMsg)(nil)

// Metadata is the delivery's metadata, from its reply subject. It is shared:
// callers must not change it.
func (m *pulledMsg) Metadata() (*jetstream.MsgMetadata, error) { return m.md, m.mdErr }

func parseMetadata(msg *nats.Msg) (*jetstream.MsgMetadata, error) {
	md, err := msg.Metadata()
	if err != nil {
		return nil, err
	}
	return &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Consumer: md.Sequence.Consumer, Stream: md.Sequence.Stream},
		NumDelivered: md.NumDelivered,
		NumPending:   md.NumPending,
		Timestamp:    md.Timestamp,
		Stream:       md.Stream,
		Consumer:     md.Consumer,
		Domain:       md.Domain,
	}, nil
}

// Data returns the body.
func (m *pulledMsg) Data() []byte { return m.msg.Data }

// Headers returns the headers.
func (m *pulledMsg) Headers() nats.Header { return m.msg.Header }

// Subject returns the subject the message was published to.
func (m *pulledMsg) Subject() string { return m.msg.Subject }

// settle publishes a final acknowledgement once.
func (m *pulledMsg) settle(body []byte) error {
	if m.msg.Reply == "" {
		return jetstream.ErrMsgNoReply
	}
	if !m.ackd.CompareAndSwap(false, true) {
		return jetstream.ErrMsgAlreadyAckd
	}
	if err := m.nc.Publish(m.msg.Reply, body); err != nil {
		m.ackd.Store(false)
		return err
	}
	return nil
}

// Ack acknowledges the message.
func (m *pulledMsg) Ack() error { return m.settle(ackAck) }

// Nak asks for redelivery now.
func (m *pulledMsg) Nak() error { return m.settle(ackNak) }

// NakWithDelay asks for redelivery after delay.
func (m *pulledMsg) NakWithDelay(delay time.Duration) error {
	if delay <= 0 {
		return m.Nak()
	}
	b := make([]byte, 0, 32)
	b = append(b, `-NAK {"delay": `...)
	b = strconv.AppendInt(b, delay.Nanoseconds(), 10)
	b = append(b, '}')
	return m.settle(b)
}

// InProgress resets the message's AckWait; it may be sent many times.
func (m *pulledMsg) InProgress() error {
	if m.msg.Reply == "" {
		return jetstream.ErrMsgNoReply
	}
	if m.ackd.Load() {
		return jetstream.ErrMsgAlreadyAckd
	}
	return m.nc.Publish(m.msg.Reply, ackProgress)
}

// TermWithReason stops redelivery; the reason appears in the server's
// MSG_TERMINATED advisory.
func (m *pulledMsg) TermWithReason(reason string) error {
	if reason == "" {
		return m.settle(ackTerm)
	}
	return m.settle([]byte("+TERM " + reason))
}
