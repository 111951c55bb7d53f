package consumer

import (
	"context"
	"time"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// policy is how a route dispatches its deliveries and what a retry does:
// the one seam between the shared path (engine, pipeline, settlement) and
// ordering. The engine and the pipeline call it at delivery, before a
// call, on a retry and on settle; nothing else asks whether a route is
// ordered. unordered is the plain policy; ordered (ordered.go) keeps the
// events of a conversation key one at a time and in stream order.
type policy interface {
	// pins is what the route's pulls present and learn of a pin.
	pins
	// deliver takes a message that took a slot: it starts it (engine
	// dispatch) or holds it.
	deliver(m *pulledMsg)
	// plan adjusts the route's pull plan.
	plan(base pullPlan, stopped bool) pullPlan
	// beforeCall is called before every call of a message: it may wait
	// (for a call slot) or refuse (the replica may no longer call). The
	// call is made under callCtx (ctx, or ctx with a send check), and end
	// is called when it is over.
	beforeCall(ctx context.Context) (callCtx context.Context, end func(), err error)
	// onRetry takes a retry verdict: again says the message is called
	// again where it is (after waiting out the delay); otherwise act is
	// the retry to carry out.
	onRetry(act Action) (again bool, carried Action)
	// interrupted is closed when waits in place must end (the pin is
	// lost); nil when they never do.
	interrupted() <-chan struct{}
	// letter adds what a dead letter says of the message's place.
	letter(m *pulledMsg, f *deadletter.Facts)
	// settling: a handled message's ack, term or hand-back (back) is
	// about to be sent.
	settling(m *pulledMsg, back bool)
	// settled: a handled message was acked, terminated or handed back.
	settled(m *pulledMsg)
	// gateBound is how many messages wait at the gate while the route is
	// stopped (0: every one waits where it is).
	gateBound() int
	// release hands back what is held and not being handled (a drain, an
	// operator's pause).
	release()
	// run does the policy's background work until stop is closed.
	run(stop <-chan struct{})
	// status is what this replica holds of an ordered route; nil for an
	// unordered one.
	status(maxKeys int) *OrderedStatus
}

// unordered is the plain policy: a delivery is handled at once, a retry
// goes back to the stream with its delay, and any replica may call.
type unordered struct {
	noPins
	eng *engine
}

func (u unordered) deliver(m *pulledMsg) {
	u.eng.m.InFlight(1)
	u.eng.dispatch(m)
}

func (unordered) plan(base pullPlan, _ bool) pullPlan { return base }
func (unordered) beforeCall(ctx context.Context) (context.Context, func(), error) {
	return ctx, func() {}, nil
}
func (unordered) onRetry(act Action) (bool, Action)    { return false, act }
func (unordered) interrupted() <-chan struct{}         { return nil }
func (unordered) letter(*pulledMsg, *deadletter.Facts) {}
func (unordered) settling(*pulledMsg, bool)            {}
func (unordered) settled(*pulledMsg)                   {}
func (unordered) gateBound() int                       { return probeCandidates }
func (unordered) release()                             {}
func (unordered) run(<-chan struct{})                  {}
func (unordered) status(int) *OrderedStatus            { return nil }

// waitFor waits d, and reports false when stop or lost closes first.
func waitFor(d time.Duration, stop, lost <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
	case <-lost:
	}
	return false
}

// handBackAtOnce is a retry carried out as a hand-back without delay.
func handBackAtOnce() Action { return Action{Verdict: verdict.Retry} }
