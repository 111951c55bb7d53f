package consumer

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
)

// This file is how an ordered route's owner holds its pin: what confirms
// it, what makes it stale, and how the owner gives it up.

// pinMargin is how much earlier than the pinned TTL the owner stops
// trusting its pin: the time a call takes to leave after the check, and
// clock rate differences between this process and the server.
const pinMargin = time.Second

// stallTick is how often an ordered route checks that its process runs,
// and maxStall the gap between two checks taken for a stall of the process
// (SIGSTOP, a starved VM, a long GC pause): its pin may have lapsed while
// it did not run, and what it reads now may be from before. A pinned pull
// goes out every third of the pinned TTL, so a shorter stall cannot let
// the pin lapse; one second is also far above a goroutine's scheduling
// delay, so a busy process does not give up its route.
const (
	stallTick = 200 * time.Millisecond
	maxStall  = time.Second
)

// staleUnconfirmed is why a pin is stale when no pull confirmed it lately.
const staleUnconfirmed = "no pull of this replica was confirmed within the pinned TTL"

var errPinStale = errors.New("this replica may no longer hold the ordered route's pin")

// group is the priority group pulls come from, and the pin they present.
func (o *ordered) group() (string, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return orderGroup, o.pin
}

// heartbeat: the server took a request sent at sent presenting pin, and
// so reset the pin's timer when it arrived: the pin holds for the TTL after
// sent, at least.
func (o *ordered) heartbeat(pin string, sent time.Time) {
	o.mu.Lock()
	if pin != "" && pin == o.pin && sent.After(o.confirmedAt) {
		o.confirmedAt = sent
	}
	o.mu.Unlock()
}

// delivered takes the pin id a delivery carried, and the request it
// filled: sent at sent presenting pin (or none, when the server pinned this
// replica with it). A new id means this replica owns the route now. The
// server took that request presenting the pin, or pinned this replica with
// it: the pin holds for the TTL after sent, at least.
func (o *ordered) delivered(id, pin string, sent time.Time) {
	o.mu.Lock()
	if id == o.lostPin {
		// From before this replica gave the pin up: it holds the event
		// without a pin, and hands it back instead of calling.
		o.mu.Unlock()
		return
	}
	if o.pin != "" && id != o.pin {
		// Pinned anew under another id: whatever happened in between,
		// start over as a replica that just took the route.
		o.mu.Unlock()
		o.pinLost("the server pinned this replica under a new pin id")
		o.mu.Lock()
	}
	gained := o.pin == ""
	if gained {
		o.pin, o.confirmedAt = id, time.Time{}
		o.lostCh = make(chan struct{})
	}
	if (pin == id || pin == "") && sent.After(o.confirmedAt) {
		o.confirmedAt = sent
	}
	o.mu.Unlock()
	if gained {
		o.deps.log.Info("this replica owns the ordered route now")
		o.poll()
	}
}

// stale says why the pin may not be used to call now ("" when it may): it
// was not confirmed recently enough, or this process stalled since
// watchStalls last ticked. It reads the clock under the lock, so that a
// tick that found a stall is never overtaken by a time read before it.
func (o *ordered) stale() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	switch {
	case o.pin == "":
		return "no pin"
	case !now.Before(o.confirmedAt.Add(orderPinnedTTL - pinMargin)):
		return staleUnconfirmed
	case now.Sub(o.ranAt) > maxStall:
		return "this process stalled"
	}
	return ""
}

// unsendable says why a call that passed stale under pin may not be
// written now ("" when it may): the pin was given up since, or the process
// stalled. A pin that went unconfirmed in between still holds: pinMargin
// is for the time a call takes to leave after its check.
func (o *ordered) unsendable(pin string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case pin == "" || o.pin != pin:
		return "the pin was given up"
	case time.Since(o.ranAt) > maxStall:
		return "this process stalled"
	}
	return ""
}

// lost is told by the puller that another replica may hold the pin now:
// hand back everything held that is not running; running handlers see
// interrupted and hand theirs back instead of retrying.
func (o *ordered) lost() { o.pinLost("") }

func (o *ordered) pinLost(why string) {
	o.mu.Lock()
	msgs, had := o.loseLocked()
	o.mu.Unlock()
	if had {
		o.handOver(msgs, why)
	}
}

// pinLostIf gives pin up, if this replica still holds it (not one it was
// pinned with since).
func (o *ordered) pinLostIf(pin, why string) {
	o.mu.Lock()
	if o.pin != pin {
		o.mu.Unlock()
		return
	}
	msgs, had := o.loseLocked()
	o.mu.Unlock()
	if had {
		o.handOver(msgs, why)
	}
}

// loseLocked gives the pin up, if this replica holds one, and takes what
// it holds that is not running.
func (o *ordered) loseLocked() (msgs []*pulledMsg, had bool) {
	if o.pin == "" {
		return nil, false
	}
	o.lostPin, o.pin = o.pin, ""
	close(o.lostCh)
	return o.takeLocked(o.seq.release()), true
}

// handOver logs a lost pin and hands back what was held.
func (o *ordered) handOver(msgs []*pulledMsg, why string) {
	attrs := []any{"count", len(msgs)}
	if why != "" {
		attrs = append(attrs, "why", why)
	}
	o.deps.log.Warn("this replica may no longer own the ordered route; handing back the events held here", attrs...)
	o.handBack(msgs)
}

func (o *ordered) interrupted() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lostCh
}

// beforeCall waits for a call slot, then refuses when the pin is not
// fresh (the replica hands what it holds back). The check comes last: the
// wait for a slot may be long. The call then carries a check to the write
// of its request (agentapi.WithSendCheck): the pin is still the one checked
// here and the process did not stall since. A process stopped after this
// check, for longer than the pin's TTL, would otherwise send the call when
// it runs again, while the route's next owner calls the same key. A call
// refused there ends like one refused here: canceled, and the pin given up
// (by end, off the transport's goroutine).
func (o *ordered) beforeCall(ctx context.Context) (context.Context, func(), error) {
	endSlot, err := o.calls.take(ctx)
	if err != nil {
		return nil, nil, err
	}
	if why := o.awaitFresh(ctx); why != "" {
		endSlot()
		o.pinLost(why)
		return nil, nil, errPinStale
	}
	_, pin := o.group()
	var refused atomic.Pointer[string]
	ctx = agentapi.WithSendCheck(ctx, func() error {
		if why := o.unsendable(pin); why != "" {
			refused.CompareAndSwap(nil, &why)
			return errPinStale
		}
		return nil
	})
	end := func() {
		endSlot()
		if why := refused.Load(); why != nil {
			o.pinLostIf(pin, "a call was refused at its write: "+*why)
		}
	}
	return ctx, end, nil
}

// confirmWait is how long a call waits for its pin to be confirmed again
// before the replica gives the pin up. A pin goes unconfirmed for a while
// when the server is slow to answer the pulls that keep it (a loaded
// machine), and right after the route was taken over (the pull that was
// pinned may have waited at the server); a pinned pull goes out at least
// every third of the TTL and a heartbeat for it a second later, so a pin
// that still holds is confirmed within this. Waiting calls nothing, so it
// is always safe.
const confirmWait = 3 * time.Second

// awaitFresh returns "" once the pin may be used to call, or why not: at
// once for no pin or a stall, after confirmWait for a pin not confirmed.
func (o *ordered) awaitFresh(ctx context.Context) string {
	why := o.stale()
	if why != staleUnconfirmed {
		return why
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(confirmWait)
	lost := o.interrupted()
	for time.Now().Before(deadline) {
		select {
		case <-t.C:
		case <-lost:
			return "the pin was lost while its confirmation was awaited"
		case <-ctx.Done():
			return "canceled while the pin's confirmation was awaited"
		}
		if why = o.stale(); why != staleUnconfirmed {
			return why
		}
	}
	return why
}

// watchStalls ticks until stop is closed, and gives the pin up when a tick
// comes late: the process did not run meanwhile. It does nothing else, so
// that only a stall of the process, never a slow read, makes a tick late.
func (o *ordered) watchStalls(stop <-chan struct{}) {
	o.mu.Lock()
	o.ranAt = time.Now()
	o.mu.Unlock()
	t := time.NewTicker(stallTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		o.mu.Lock()
		gap := time.Since(o.ranAt)
		o.ranAt = time.Now()
		var msgs []*pulledMsg
		stalled := false
		if gap > maxStall {
			// Given up in the same hold of the lock that saw the stall:
			// no call may pass in between.
			msgs, stalled = o.loseLocked()
		}
		o.mu.Unlock()
		if stalled {
			o.handOver(msgs, "this process did not run for "+gap.Round(time.Millisecond).String()+": the pin may have lapsed meanwhile")
		}
	}
}
