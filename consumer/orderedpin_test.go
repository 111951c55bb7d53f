package consumer

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// newPinOnly is an ordered policy with no route behind it: enough to
// exercise how it holds and gives up its pin.
func newPinOnly() *ordered {
	return newOrdered(nil, orderedDeps{route: Route{MaxAckPending: 8, MaxInFlight: 1}, consumer: func() jetstream.Consumer { return nil },
		log: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// An owner whose process stalled (its last tick is older than maxStall)
// may not call, even with a pull confirmed just now: a delivery read after
// a stall may credit the pin with a pull sent after it.
func TestOrderedPinIsNotFreshAfterAStall(t *testing.T) {
	o := newPinOnly()
	o.delivered("pin-1", "", time.Now())
	if o.stale() != "" {
		t.Fatal("a pin confirmed just now, with no stall, is not fresh")
	}
	o.mu.Lock()
	o.ranAt = time.Now().Add(-maxStall - 100*time.Millisecond)
	o.mu.Unlock()
	o.heartbeat("pin-1", time.Now())
	if o.stale() == "" {
		t.Error("fresh after a stall longer than maxStall")
	}
}

// A pin given up is never taken back: a delivery under it is one the
// server sent before, and the server pins anew under a new id.
func TestOrderedLostPinIsNotTakenBack(t *testing.T) {
	o := newPinOnly()
	o.delivered("pin-1", "", time.Now())
	o.pinLost("test")
	o.delivered("pin-1", "pin-1", time.Now())
	if _, pin := o.group(); pin != "" || o.stale() == "" {
		t.Errorf("took a lost pin back: presents %q, fresh %v", pin, o.stale() == "")
	}
	o.delivered("pin-2", "", time.Now())
	if _, pin := o.group(); pin != "pin-2" || o.stale() != "" {
		t.Errorf("a new pin: presents %q, fresh %v; want pin-2, fresh", pin, o.stale() == "")
	}
}
