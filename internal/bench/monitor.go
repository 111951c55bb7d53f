package bench

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ackMonitor watches a stream's acknowledgements on the wire: every ack,
// nak, term and in-progress a consumer sends is a message on
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, and a
// plain subscription receives a copy. <ts> is when the message was stored,
// so "now - ts" is the publish-to-settle time, measured the same way for any
// worker without touching it.
type ackMonitor struct {
	sub *nats.Subscription

	mu        sync.Mutex
	want      int
	final     int // distinct messages acked or terminated
	acks      int
	terms     int
	naks      int
	wpis      int
	dups      int // acks or terms of an already settled message
	seen      []bool
	lat       []float64 // publish-to-settle of each final settle, seconds
	first     time.Time
	last      time.Time
	maxGap    time.Duration
	reached   time.Time // when final reached want
	done      chan struct{}
	doneOnce  sync.Once
	arrivals  []time.Time // optional: settle times, for the soak
	keepTimes bool
}

func newAckMonitor(nc *nats.Conn, stream string, want int, keepTimes bool) (*ackMonitor, error) {
	m := &ackMonitor{want: want, done: make(chan struct{}), keepTimes: keepTimes, seen: make([]bool, want+1), lat: make([]float64, 0, want)}
	sub, err := nc.Subscribe("$JS.ACK."+stream+".>", m.onAck)
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	m.sub = sub
	return m, nc.Flush()
}

func (m *ackMonitor) stop() { _ = m.sub.Unsubscribe() }

// parseAck returns the stream sequence and stored time of an ack subject, in
// either the old (9 tokens) or the new (12 tokens, with domain and account
// hash) form.
func parseAck(subj string) (seq uint64, ts int64, ok bool) {
	tok := strings.Split(subj, ".")
	var si, ti int
	switch {
	case len(tok) == 9:
		si, ti = 5, 7
	case len(tok) >= 11:
		si, ti = 7, 9
	default:
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(tok[si], 10, 64)
	t, err2 := strconv.ParseInt(tok[ti], 10, 64)
	return s, t, err1 == nil && err2 == nil
}

func (m *ackMonitor) onAck(msg *nats.Msg) {
	now := time.Now()
	seq, ts, ok := parseAck(msg.Subject)
	if !ok {
		return
	}
	d := msg.Data
	final := false
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case len(d) == 0 || strings.HasPrefix(string(d), "+ACK"):
		m.acks++
		final = true
	case strings.HasPrefix(string(d), "+TERM"):
		m.terms++
		final = true
	case strings.HasPrefix(string(d), "-NAK"):
		m.naks++
	case strings.HasPrefix(string(d), "+WPI"):
		m.wpis++
	}
	if !final {
		return
	}
	for uint64(len(m.seen)) <= seq {
		m.seen = append(m.seen, make([]bool, len(m.seen))...)
	}
	if m.seen[seq] {
		m.dups++
		return
	}
	m.seen[seq] = true
	m.final++
	m.lat = append(m.lat, now.Sub(time.Unix(0, ts)).Seconds())
	if m.first.IsZero() {
		m.first = now
	} else if g := now.Sub(m.last); g > m.maxGap {
		m.maxGap = g
	}
	m.last = now
	if m.keepTimes {
		m.arrivals = append(m.arrivals, now)
	}
	if m.want > 0 && m.final >= m.want {
		m.doneOnce.Do(func() { m.reached = now; close(m.done) })
	}
}

type ackStats struct {
	Final, Acks, Terms, Naks, WPIs, Dups int
	First, Last                          time.Time
	// At99 is when 99 % of the wanted messages were settled (zero when
	// fewer were).
	At99 time.Time
	// Reached is when all the wanted messages were settled (zero when
	// fewer were).
	Reached       time.Time
	MaxGap        time.Duration
	P50, P99, Max float64
}

func (m *ackMonitor) stats() ackStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := ackStats{Final: m.final, Acks: m.acks, Terms: m.terms, Naks: m.naks, WPIs: m.wpis, Dups: m.dups,
		First: m.first, Last: m.last, MaxGap: m.maxGap, Reached: m.reached}
	if k := m.want * 99 / 100; k > 0 && len(m.arrivals) >= k {
		s.At99 = m.arrivals[k-1]
	}
	lat := slices.Clone(m.lat)
	slices.Sort(lat)
	s.P50, s.P99 = quantile(lat, 0.5), quantile(lat, 0.99)
	if len(lat) > 0 {
		s.Max = lat[len(lat)-1]
	}
	return s
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}
