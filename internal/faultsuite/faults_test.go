package faultsuite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/nats-io/nats.go/jetstream"
)

// chaos injects the faults while the events flow: a replica SIGKILLed
// mid-call every so often (and restarted), and, one after another at
// planned times, broker restarts or leader kills, API outages, token
// rotations, the paused agent becoming runnable, and the agents route's
// not-runnable agent becoming runnable and hanging agent recovering. The returned channel
// is closed when every fault is over and every replica runs again.
func (r *run) chaos(published <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	stopKills := make(chan struct{})
	killsDone := make(chan struct{})
	killRng := rand.New(rand.NewPCG(r.rng.Uint64(), 1))
	go func() {
		defer close(killsDone)
		if r.p.killEvery[0] > 0 {
			r.killLoop(killRng, stopKills)
		}
	}()

	type action struct {
		at   time.Duration
		name string
		do   func()
	}
	var plan []action
	for range r.p.restarts {
		plan = append(plan, action{name: "nats-restart", do: r.restartNATS})
	}
	for i := range r.p.leaderKill {
		stream := workStream
		if i%2 == 1 {
			stream = deadletter.DefaultStream
		}
		plan = append(plan, action{name: "leader-kill " + stream, do: func() { r.killLeader(stream) }})
	}
	for range r.p.outages {
		plan = append(plan, action{name: "api-outage", do: r.outage})
	}
	for range r.p.rotations {
		plan = append(plan, action{name: "token-rotation", do: r.rotateToken})
	}
	r.rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	phasesDone := make(chan struct{})
	go func() { defer close(phasesDone); r.apiPhases() }()
	span := r.p.publishFor * 3 / 4
	for i := range plan {
		plan[i].at = r.p.publishFor/10 + span*time.Duration(i)/time.Duration(max(len(plan), 1))
	}
	if r.p.paused > 0 {
		plan = append(plan, action{at: time.Duration(r.p.runnableAt * float64(r.p.publishFor)), name: "runnable", do: r.makeRunnable})
	}
	if am := r.p.agents; am != nil {
		plan = append(plan,
			action{at: time.Duration(am.runnableAt * float64(r.p.publishFor)), name: "agent runnable: " + agentNotRunnable, do: r.makeAgentRunnable},
			action{at: time.Duration(am.recoverAt * float64(r.p.publishFor)), name: "agent recovers: " + agentHang, do: r.recoverHangingAgent})
	}
	if r.p.scaleUpAt > 0 {
		plan = append(plan, action{at: time.Duration(r.p.scaleUpAt * float64(r.p.publishFor)), name: "scale-up", do: r.scaleUp})
	}
	if r.p.killOwnerAt > 0 {
		plan = append(plan, action{at: time.Duration(r.p.killOwnerAt * float64(r.p.publishFor)), name: "kill-ordered-owner", do: r.killOrderedOwner})
	}
	for i := range r.p.stalls {
		// Spread over the publishing period, the last well before its end.
		at := r.p.publishFor / 10 * 8 * time.Duration(i) / time.Duration(r.p.stalls)
		plan = append(plan, action{at: r.p.publishFor/20 + at, name: "stall-ordered-owner", do: r.stallOrderedOwner})
	}
	slices.SortStableFunc(plan, func(a, b action) int { return int(a.at - b.at) })

	go func() {
		defer close(done)
		start := time.Now()
		for _, a := range plan {
			if d := time.Until(start.Add(a.at)); d > 0 {
				time.Sleep(d) // the schedule, not synchronisation
			}
			r.logf("%s", a.name)
			a.do()
		}
		<-published
		close(stopKills)
		<-killsDone
		<-phasesDone
		// The steady probabilistic faults (5xx, 429, hangs, drops) end
		// with the rest: the drain target is judged after the last fault
		// ends, and an API that keeps failing one call in eight is a fault
		// that has not. (On an ordered route every failure also delays the
		// later events of its conversation.)
		calm := r.api.emu.Faults()
		calm.ServerErrorRate, calm.RateLimitRate, calm.HangRate, calm.DropRate = 0, 0, 0, 0
		r.api.emu.SetFaults(calm)
		r.logf("faults over")
	}()
	return done
}

// killLoop SIGKILLs a random replica while it has a call in flight,
// preferably one whose event the API has already accepted, and restarts it
// after a while, until stop is closed.
func (r *run) killLoop(rng *rand.Rand, stop <-chan struct{}) {
	between := func(b [2]time.Duration) time.Duration {
		return b[0] + time.Duration(rng.Int64N(int64(b[1]-b[0])+1))
	}
	for {
		select {
		case <-stop:
			return
		case <-time.After(between(r.p.killEvery)):
		}
		slot := rng.IntN(r.p.workers)
		if r.fleet.current(slot) == nil {
			continue
		}
		if !r.killSlot(slot, between(r.p.downFor), false) {
			return
		}
	}
}

// killSlot SIGKILLs the process in slot mid-call and restarts it after
// down, one kill at a time (the kill loop's, the ordered route owner's).
// owner says the process owns the ordered route. It reports false when
// the run cannot go on killing.
func (r *run) killSlot(slot int, down time.Duration, owner bool) bool {
	r.killMu.Lock()
	defer r.killMu.Unlock()
	if r.fleet.current(slot) == nil {
		return true
	}
	{
		// Wait (a little) for the moment the API holds an accepted
		// event's answer for this replica, else for any call in flight.
		var inFlight, holding int
		for deadline := time.Now().Add(time.Second); ; {
			inFlight, holding = r.api.rec.busy(slot)
			if holding > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		keys := r.api.rec.callingKeys(slot)
		killedAt := time.Now()
		if err := r.fleet.kill(slot); err != nil {
			r.fail(err)
			return false
		}
		r.mu.Lock()
		r.kills = append(r.kills, killRecord{at: killedAt, slot: slot, keys: keys, owner: owner})
		r.mu.Unlock()
		r.logf("SIGKILL worker %d (%d calls in flight, %d accepted and unanswered)", slot, inFlight, holding)
		r.count(func(f *figures) {
			f.kills++
			if inFlight > 0 {
				f.killsMidCall++
			}
			if holding > 0 {
				f.killsHoldingAccepted++
			}
		})
		downUntil := time.Now().Add(down)
		for time.Now().Before(downUntil) || r.natsDown.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		w, err := r.fleet.start(slot)
		if err != nil {
			r.fail(err)
			return false
		}
		r.logf("restarted worker %d (%s)", slot, filepath.Base(w.logPath))
		// The next fault waits until the replica is back at work.
		if err := r.fleet.waitReady(60 * time.Second); err != nil {
			r.fail(err)
			return false
		}
	}
	return true
}

// killOrderedOwner SIGKILLs the replica that owns the ordered route (the
// one that made its latest call): its conversations, held and called
// alike, must resume on another replica within the takeover target. It is
// planned after the faults that would excuse a slow takeover, so that the
// takeover is judged.
func (r *run) killOrderedOwner() {
	// The route may not have called yet (stopped by route health through
	// an outage and the 401 window, say): wait for its first call, while
	// events are still published, so that conversations are outstanding
	// when the owner dies.
	deadline := r.publishStart.Add(r.p.publishFor)
	slot := r.api.rec.lastCaller(triggerConvo)
	for slot < 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling the recorder
		slot = r.api.rec.lastCaller(triggerConvo)
	}
	if slot < 0 {
		r.fail(errors.New("the ordered route made no call while events were published: no owner to kill"))
		return
	}
	r.logf("the ordered route's owner is worker %d", slot)
	r.killSlot(slot, r.p.downFor[0], true)
	r.count(func(f *figures) { f.ownerKills++ })
}

// stallOrderedOwner stops the replica that owns the ordered route (the one
// that made its latest call) with SIGSTOP for the profile's stallFor, longer
// than the pinned TTL, and lets it go on with SIGCONT, as a long GC pause or
// a starved VM would: another replica takes the route over meanwhile, and
// the stalled one must call nothing that overlaps the new owner's calls of
// a key when it wakes (the recorder's overlap check).
func (r *run) stallOrderedOwner() {
	// On a loaded machine (-race) the replicas may not have called the
	// ordered route yet when the schedule comes to the stall: there is
	// no owner to stall until one has.
	slot := r.api.rec.lastCaller(triggerConvo)
	for deadline := time.Now().Add(15 * time.Second); slot < 0 && time.Now().Before(deadline); slot = r.api.rec.lastCaller(triggerConvo) {
		time.Sleep(50 * time.Millisecond)
	}
	var w *worker
	if slot >= 0 {
		w = r.fleet.current(slot)
	}
	if w == nil {
		r.fail(errors.New("the ordered route has no owner to stall"))
		return
	}
	from := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		r.fail(fmt.Errorf("SIGSTOP worker %d: %w", slot, err))
		return
	}
	r.logf("stalled worker %d, the ordered route's owner, for %v", slot, r.p.stallFor)
	time.Sleep(r.p.stallFor) // the stall itself
	if err := w.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.fail(fmt.Errorf("SIGCONT worker %d: %w", slot, err))
		return
	}
	r.faultSpan("owner-stall", from, false)
	r.count(func(f *figures) { f.stalls++ })
}

// scaleUp starts the replicas the profile held back, while the events
// flow, as `kubectl scale` would: new processes with the same
// configuration. The ordered route's owner keeps it; the new replicas
// stand by, and take over what a killed owner leaves.
func (r *run) scaleUp() {
	from := time.Now()
	for slot := r.p.startWorkers; slot < r.p.workers; slot++ {
		w, err := r.fleet.start(slot)
		if err != nil {
			r.fail(err)
			return
		}
		r.logf("scale-up: started worker %d (%s)", slot, filepath.Base(w.logPath))
	}
	r.fleet.activate(r.p.workers)
	if err := r.fleet.waitReady(60 * time.Second); err != nil {
		r.fail(err)
		return
	}
	r.faultSpan("scale-up", from, false)
	r.count(func(f *figures) { f.scaleUps++ })
	r.logf("scaled up from %d to %d replicas", r.p.startWorkers, r.p.workers)
}

// logf logs a line of the run's timeline, with the wall clock to match
// against the workers' logs.
func (r *run) logf(format string, args ...any) {
	r.t.Logf("%s: %s %s", r.p.name, time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// restartNATS stops the single server abruptly (clients see the connection
// drop, pull requests get no goodbye) and starts it again on the same port
// and file store after the downtime.
func (r *run) restartNATS() {
	if !r.quiesce() {
		return
	}
	defer r.natsDown.Store(false)
	from := time.Now()
	r.single.Kill()
	time.Sleep(r.p.downtime) // the outage itself
	err := r.single.Restart()
	r.faultSpan("nats-restart", from, true)
	if err != nil {
		r.fail(fmt.Errorf("restarting nats-server: %w", err))
		return
	}
	r.count(func(f *figures) { f.restarts++ })
	r.fail(r.waitWhole(true, workStream, deadletter.DefaultStream))
}

// killLeader kills the node leading stream and restarts it after the
// downtime; the other two elect a new leader meanwhile.
//
// No replica is starting up while a server dies, or until the cluster is
// whole again. A replica starting then gets there too (its set-up retries
// unanswered JetStream requests), but each lost answer costs it a 5 s
// attempt; keeping the two apart keeps a run's length predictable.
func (r *run) killLeader(stream string) {
	if !r.quiesce() {
		return
	}
	defer r.natsDown.Store(false)
	var leader int
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error
		if leader, err = r.cluster.StreamLeader(stream); err == nil {
			break
		}
		if time.Now().After(deadline) {
			r.fail(fmt.Errorf("no leader for %s: %w", stream, err))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	node := r.cluster.Node(leader)
	r.logf("killing node %d, leader of %s", leader, stream)
	from := time.Now()
	node.Kill()
	time.Sleep(r.p.downtime) // the node's outage itself
	err := node.Restart()
	r.faultSpan("leader-kill", from, false)
	if err != nil {
		r.fail(fmt.Errorf("restarting node %d: %w", leader, err))
		return
	}
	r.logf("node %d restarted", leader)
	r.count(func(f *figures) { f.leaderKills++ })
	r.fail(r.waitWhole(true, workStream, deadletter.DefaultStream))
}

// quiesce waits until every replica is relaying and then keeps replicas
// from being restarted until natsDown is cleared.
func (r *run) quiesce() bool {
	if err := r.fleet.waitReady(60 * time.Second); err != nil {
		r.fail(err)
		return false
	}
	r.natsDown.Store(true)
	return true
}

// waitWhole waits until JetStream answers and, in a cluster, every replica
// of the streams (and of the routes' consumers) is current.
func (r *run) waitWhole(consumers bool, streams ...string) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if last = r.jetStreamWhole(consumers, streams); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("JetStream not whole after 60s: %w", last)
}

func (r *run) jetStreamWhole(consumers bool, streams []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	followers := 0
	if r.p.cluster {
		followers = 2
	}
	whole := func(what string, ci *jetstream.ClusterInfo) error {
		if ci == nil {
			return nil
		}
		if ci.Leader == "" {
			return fmt.Errorf("%s has no leader", what)
		}
		if len(ci.Replicas) != followers {
			return fmt.Errorf("%s has %d followers", what, len(ci.Replicas))
		}
		for _, p := range ci.Replicas {
			if !p.Current || p.Offline {
				return fmt.Errorf("%s: replica %s not current", what, p.Name)
			}
		}
		return nil
	}
	for _, name := range streams {
		s, err := r.js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		if err := whole("stream "+name, s.CachedInfo().Cluster); err != nil {
			return err
		}
	}
	for _, name := range durables() {
		if !consumers {
			break
		}
		c, err := r.js.Consumer(ctx, workStream, name)
		if err != nil {
			return fmt.Errorf("consumer %s: %w", name, err)
		}
		if err := whole("consumer "+name, c.CachedInfo().Cluster); err != nil {
			return err
		}
	}
	return nil
}

// outage makes every call a 503 for outageFor: long enough for the
// replicas' breakers to open; then the API recovers.
func (r *run) outage() {
	emu := r.api.emu
	before := emu.Faults()
	down := before
	down.ServerErrorRate, down.RateLimitRate, down.HangRate, down.DropRate = 1, 0, 0, 0
	from := time.Now()
	emu.SetFaults(down)
	time.Sleep(r.p.outageFor) // the outage itself
	emu.SetFaults(before)
	r.faultSpan("api-outage", from, true)
	r.count(func(f *figures) { f.outages++ })
}

// apiPhases runs the profile's schedule of API fault phases, each followed
// by calm, starting a tenth into the publishing.
func (r *run) apiPhases() {
	if len(r.p.phases) == 0 {
		return
	}
	time.Sleep(r.p.publishFor / 10) // the schedule, not synchronisation
	emu := r.api.emu
	calm := emu.Faults()
	for _, ph := range r.p.phases {
		r.logf("API phase %s for %v", ph.name, ph.dur)
		from := time.Now()
		if ph.unauth {
			r.rotateTokenWindow(ph.dur)
		} else {
			f := ph.faults
			f.Seed, f.HangFor = calm.Seed, calm.HangFor
			emu.SetFaults(f)
			time.Sleep(ph.dur) // the phase itself
			emu.SetFaults(calm)
			if ph.excuse {
				r.count(func(f *figures) { f.outages++ })
			}
		}
		r.faultSpan("api "+ph.name, from, ph.excuse || ph.unauth)
		time.Sleep(r.p.calm)
	}
}

// rotateToken rotates the agent token the way it goes wrong in practice:
// the API revokes the old token before the new one reaches the replicas, so
// there is a window of 401s. Once 401s have been answered for window401,
// the API knows the new token and the token files are replaced atomically.
func (r *run) rotateToken() {
	from := time.Now()
	r.rotateTokenWindow(r.p.window401)
	r.faultSpan("401 window", from, true)
}

// rotateTokenWindow revokes the token, waits for the first 401, keeps the
// API refusing for window, then hands the replicas a new token.
func (r *run) rotateTokenWindow(window time.Duration) {
	emu := r.api.emu
	from := r.api.rec.len()
	old := r.tokens[len(r.tokens)-1]
	next := r.newToken()
	emu.RevokeToken(old)
	deadline := time.Now().Add(10 * time.Second)
	for r.api.rec.countStatus(401, from) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(window) // the window itself
	emu.AddToken(next, grants()...)
	for _, path := range r.tokenFiles {
		if err := writeFileAtomic(path, next+"\n"); err != nil {
			r.fail(err)
		}
	}
	r.count(func(f *figures) { f.rotations++ })
}

// makeRunnable makes the paused agent runnable once it has answered 409
// (the route stops at the first; its events wait in the stream).
func (r *run) makeRunnable() {
	deadline := time.Now().Add(30 * time.Second)
	for r.api.rec.countStatus(409, 0) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.api.emu.SetRunnable(triggerPaused, true)
}
