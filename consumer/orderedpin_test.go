package consumer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

// newPinOnly is an ordered policy with no route behind it: enough to
// exercise how it holds and gives up its pin.
func newPinOnly() *ordered {
	return newOrdered(nil, orderedDeps{route: Route{MaxAckPending: 8, MaxInFlight: 1}, consumer: func() jetstream.Consumer { return nil },
		limit: func() int { return 1 }, log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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

// An owner whose process stalls after a call passed its pin check, before
// the call was written, does not write it when it runs again (the route's
// next owner may be calling the same key by then): the call ends
// canceled, and the pin is given up.
func TestOrderedCallStalledBeforeItsWriteIsNotSent(t *testing.T) {
	emu, url := testenv.Emulator(t, emulator.WithToken("tok", "*"), emulator.WithTrigger("agtch_o", true))
	c, err := agentapi.NewClient(url, agentapi.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	id, _ := agentapi.ParseTriggerID("agtch_o")
	agent, err := c.Agent(id, agentapi.StaticToken(agentapi.NewSecret("tok")))
	if err != nil {
		t.Fatal(err)
	}
	call := func(o *ordered, stall bool, key string) (int, error) {
		ctx, end, err := o.beforeCall(context.Background())
		if err != nil {
			t.Fatalf("beforeCall: %v", err)
		}
		defer end()
		if stall { // the process stops here, for longer than maxStall
			o.mu.Lock()
			o.ranAt = time.Now().Add(-maxStall - time.Second)
			o.mu.Unlock()
		}
		return agent.Trigger(ctx, agentapi.Event{Input: "x", ConversationKey: "k", IdempotencyKey: key})
	}
	o := newPinOnly()
	o.mu.Lock()
	o.ranAt = time.Now()
	o.mu.Unlock()
	o.delivered("pin-1", "", time.Now())

	if status, err := call(o, false, "ev-1"); status != 202 || err != nil {
		t.Fatalf("a call with a fresh pin and no stall: %d, %v", status, err)
	}
	status, err := call(o, true, "ev-2")
	if status != 0 || agentapi.ClassOfError(err) != agentapi.ClassCanceled || !errors.Is(err, errPinStale) {
		t.Errorf("a call stalled before its write: %d, %v; want canceled with errPinStale", status, err)
	}
	if n := emu.Accepted("agtch_o", "ev-2"); n != 0 || len(emu.Requests()) != 1 {
		t.Errorf("the API saw the stalled call (%d accepted, %d requests in all, want 0 and 1)", n, len(emu.Requests()))
	}
	if _, pin := o.group(); pin != "" {
		t.Errorf("still presents pin %q after a call was refused at its write for a stall", pin)
	}
}
