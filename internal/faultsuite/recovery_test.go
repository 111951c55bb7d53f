package faultsuite

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentrelay/agentrelay/consumer"
)

// Recovery is a feature with targets, measured like throughput: how long
// after the last fault the backlog is drained, whether delivery stalls
// outside the faults that stop it by design, how fast a killed replica's
// calls are taken over, and how many calls an event costs.

// targets are a profile's recovery targets; a zero field is not checked.
type targets struct {
	drain        time.Duration // the last event accepted at most this long after the last fault ended
	windowShare  float64       // every 5 s window accepts at least this share of the publish rate, outside excused faults
	killTakeover time.Duration // a killed replica's calls are made again by another process within this
	maxCalls     int           // calls of any event but the probing ones (about its delivery attempts)
	catchUp      time.Duration // the backlog an API outage left accepted within this of its end
}

// faultWindow is a span of time a fault was in effect.
type faultWindow struct {
	name     string
	from, to time.Time
	excused  bool // stopping delivery is what this fault does by design (an outage, the 401 window, a single server down)
}

// killRecord is one SIGKILL and the keys the replica was calling.
type killRecord struct {
	at    time.Time
	slot  int
	keys  []string
	owner bool // the replica owned the ordered route (killOrderedOwner)
}

// recovery is what a run measured.
type recovery struct {
	faultsEnd    time.Time // the last fault's end, a kill's counted ack_wait after it
	drain        time.Duration
	windows      []window
	stalled      []window
	takeoverMax  time.Duration
	takeoverLate []string
	// The ordered route: kills of its owner judged, how many
	// conversations they left waiting, and the worst time until one was
	// called again.
	ownerKills, convoWaits int
	convoTakeoverMax       time.Duration
	callsPerEvent          []int          // calls for each event that had to be accepted, sorted
	callsByStatus          map[string]int // all calls of such events by answer
	maxCallsRouted         int            // calls of the worst event, apart from the few that probed a stopped route
	heavy                  []string       // call histories of the events called most, for the log
	catchUp                []catchUp      // per fault that stops delivery: how soon the backlog it left was accepted
}

// catchUp is how long after a fault that stopped delivery ended the events
// published before its end were all accepted.
type catchUp struct {
	fault string
	took  time.Duration
	last  string // the call history of the event accepted last
}

// window is one 5 s span of the publishing period.
type window struct {
	from, to            time.Duration // since the publishing started
	published, accepted int
	excusedBy           string
}

const windowLen = 5 * time.Second

// measureRecovery computes the recovery figures of a run.
func (r *run) measureRecovery() recovery {
	var rc recovery
	reqs := r.api.rec.requests()
	type tk struct{ trigger, key string }
	firstAccept := map[tk]time.Time{}
	byKey := map[string][]request{} // every call, by key
	calls := map[tk]map[string]int{}
	for _, q := range reqs {
		k := tk{q.TriggerID, q.Key}
		if calls[k] == nil {
			calls[k] = map[string]int{}
		}
		calls[k][statusName(q.Status)]++
		if q.Status == 202 {
			if t, ok := firstAccept[k]; !ok || q.done.Before(t) {
				firstAccept[k] = q.done
			}
		}
		byKey[q.Key] = append(byKey[q.Key], q)
	}

	// Drain: the last acceptance of an event after the faults ended.
	var last time.Time
	rc.callsByStatus = map[string]int{}
	for i := range r.events {
		e := &r.events[i]
		if !e.stored || e.Kind == KindDeadLetter {
			continue
		}
		k := tk{e.TriggerID, e.Key}
		if t := firstAccept[k]; t.After(last) {
			last = t
		}
		if e.ConversationKey != "" {
			// An ordered event is retried where it is, and every one held
			// may probe a stopped route: its calls are on one delivery.
			continue
		}
		n := 0
		for st, c := range calls[k] {
			n += c
			rc.callsByStatus[st] += c
		}
		rc.callsPerEvent = append(rc.callsPerEvent, n)
	}
	slices.Sort(rc.callsPerEvent)
	// The three events called most, with their call histories.
	type keyCalls struct {
		key   string
		calls int
	}
	var byCalls []keyCalls
	for k, m := range calls {
		n := 0
		for _, c := range m {
			n += c
		}
		byCalls = append(byCalls, keyCalls{k.key, n})
	}
	slices.SortFunc(byCalls, func(a, b keyCalls) int { return b.calls - a.calls })
	// Past the probing messages (one per route or agent stop), the events
	// called most: what cost them their calls.
	skip := min(r.fig.breakerOpens+r.fig.agentStops, len(byCalls))
	for _, kc := range byCalls[skip:min(skip+3, len(byCalls))] {
		rc.heavy = append(rc.heavy, fmt.Sprintf("%s: %s", kc.key, history(reqs, kc.key)))
	}
	// Catch-up after each fault that stops delivery by design.
	for _, f := range r.windows {
		if !f.excused {
			continue
		}
		var lastAccept time.Time
		var lastKey string
		for i := range r.events {
			e := &r.events[i]
			if !e.stored || e.Kind != KindAccept || !e.published.Before(f.to) {
				continue
			}
			if t := firstAccept[tk{e.TriggerID, e.Key}]; t.After(lastAccept) {
				lastAccept, lastKey = t, e.Key
			}
		}
		// Time that later faults of the same kind took out of the catch-up
		// (an outage right after a broker restart) is not the first one's.
		took := max(lastAccept.Sub(f.to), 0)
		for _, g := range r.windows {
			if g.excused && g != f {
				from, to := maxTime(g.from, f.to), minTime(g.to, lastAccept)
				if to.After(from) {
					took -= to.Sub(from)
				}
			}
		}
		rc.catchUp = append(rc.catchUp, catchUp{fault: f.name, took: max(took, 0), last: lastKey + ": " + history(reqs, lastKey)})
	}
	if len(rc.callsPerEvent) > 0 {
		// Each time a replica stopped a route (or one agent of a route
		// that serves many) it held one message to probe with; those make
		// many calls on one delivery by design.
		probers := min(len(rc.callsPerEvent)-1, r.fig.breakerOpens+r.fig.agentStops)
		rc.maxCallsRouted = rc.callsPerEvent[len(rc.callsPerEvent)-1-probers]
	}
	// A SIGKILL's effect ends when the killed replica's calls may be
	// redelivered: ack_wait (the default) after the kill. (How soon they
	// are is its own target, killTakeover.)
	end := r.faultsEnd
	for _, k := range r.kills {
		end = maxTime(end, k.at.Add(consumer.DefaultAckWait))
	}
	rc.faultsEnd = end
	if last.After(end) {
		rc.drain = last.Sub(end)
	}

	// Windows over the publishing period: events of the routes that must
	// accept (not the not-runnable agent's, whose route waits by design).
	for from := time.Duration(0); from < r.p.publishFor; from += windowLen {
		w := window{from: from, to: from + windowLen}
		a, b := r.publishStart.Add(w.from), r.publishStart.Add(w.to)
		for _, f := range r.windows {
			if f.excused && f.from.Before(b) && f.to.After(a) {
				w.excusedBy = f.name
				break
			}
		}
		for i := range r.events {
			e := &r.events[i]
			if !e.stored || e.Kind != KindAccept {
				continue
			}
			if !e.published.Before(a) && e.published.Before(b) {
				w.published++
			}
			if t := firstAccept[tk{e.TriggerID, e.Key}]; !t.Before(a) && t.Before(b) {
				w.accepted++
			}
		}
		rc.windows = append(rc.windows, w)
	}
	rate := float64(0)
	for _, w := range rc.windows {
		rate += float64(w.published)
	}
	rate /= float64(max(len(rc.windows), 1))
	for _, w := range rc.windows {
		if w.excusedBy == "" && r.p.targets.windowShare > 0 && float64(w.accepted) < r.p.targets.windowShare*rate {
			rc.stalled = append(rc.stalled, w)
		}
	}

	// Takeover: each key a killed replica was calling is called again by
	// another process. A kill within the target of a fault that stops
	// delivery by design is excused: the event waits for the fault, not for
	// the crash.
	notRunnable := map[string]bool{}
	for i := range r.events {
		if r.events[i].Kind == KindNotRunnable {
			notRunnable[r.events[i].Key] = true
		}
	}
	// A kill within the target of a broker fault (a restart or a leader
	// kill) is judged by neither: the new consumer leader restarts the
	// killed replica's ack timers.
	excuse := func(k killRecord) string {
		excused := ""
		for _, f := range r.windows {
			broker := f.name == "leader-kill" || f.name == "nats-restart"
			if (f.excused || broker) && f.from.Before(k.at.Add(r.p.targets.killTakeover)) && f.to.After(k.at) {
				excused = f.name
			}
		}
		return excused
	}
	for _, k := range r.kills {
		excused := excuse(k)
		for _, key := range k.keys {
			if notRunnable[key] {
				continue // its route waits for the agent, by design
			}
			// Taken over: called again by another process (the killed
			// slot's restarted one counts). Whether that call is accepted
			// is the API's business (a hang, a 503), not crash recovery's.
			var took time.Duration = -1
			for _, q := range byKey[key] {
				if q.at.After(k.at) {
					if d := q.at.Sub(k.at); took < 0 || d < took {
						took = d
					}
				}
			}
			if took < 0 || excused != "" {
				continue // dead-lettered, or waiting for an outage
			}
			rc.takeoverMax = max(rc.takeoverMax, took)
			if r.p.targets.killTakeover > 0 && took > r.p.targets.killTakeover {
				rc.takeoverLate = append(rc.takeoverLate, fmt.Sprintf("%s after %v (worker %d killed at %s; calls: %s)",
					key, took.Round(time.Millisecond), k.slot, k.at.Format("15:04:05.000"), history(reqs, key)))
			}
		}
	}
	accepted := func(e *planned) time.Time { return firstAccept[tk{e.TriggerID, e.Key}] }
	r.measureConvoTakeover(&rc, excuse, accepted, byKey)
	return rc
}

// measureConvoTakeover judges the ordered route's recovery by
// conversation: when the replica that owned the route (it was calling an
// event of the route) is killed, every conversation with an event
// outstanding (published before the kill or within the target after it,
// and not accepted before the kill) waits for another replica to take the
// route over (the pinned TTL, then the fence), including those whose
// events were only held. Each must be called again, by another process,
// within the takeover target of the kill or of its event's publication,
// whichever is later.
func (r *run) measureConvoTakeover(rc *recovery, excuse func(killRecord) string, accepted func(*planned) time.Time, byKey map[string][]request) {
	convo := map[string][]*planned{} // conversation -> its events
	convoOf := map[string]string{}   // Idempotency-Key -> conversation
	for i := range r.events {
		e := &r.events[i]
		if e.stored && e.TriggerID == triggerConvo && e.ConversationKey != "" {
			convo[e.ConversationKey] = append(convo[e.ConversationKey], e)
			convoOf[e.Key] = e.ConversationKey
		}
	}
	reqs := r.api.rec.requests()
	for _, k := range r.kills {
		owner := k.owner
		for _, key := range k.keys {
			owner = owner || convoOf[key] != ""
		}
		if !owner || excuse(k) != "" {
			continue
		}
		rc.ownerKills++
		for ck, events := range convo {
			var since time.Time // when the conversation's first outstanding event was there to call
			var took time.Duration = -1
			for _, e := range events {
				at := accepted(e)
				if !e.published.Before(k.at.Add(r.p.targets.killTakeover)) || (!at.IsZero() && at.Before(k.at)) {
					continue
				}
				if from := maxTime(k.at, e.published); since.IsZero() || from.Before(since) {
					since = from
				}
			}
			if since.IsZero() {
				continue // nothing outstanding
			}
			for _, e := range events {
				for _, q := range byKey[e.Key] {
					if d := q.at.Sub(since); q.at.After(k.at) && (took < 0 || d < took) {
						took = max(d, 0)
					}
				}
			}
			if took < 0 {
				continue // never called again, which the checker reports
			}
			rc.convoWaits++
			rc.convoTakeoverMax = max(rc.convoTakeoverMax, took)
			if r.p.targets.killTakeover > 0 && took > r.p.targets.killTakeover {
				var calls []string
				for _, e := range events {
					calls = append(calls, history(reqs, e.Key))
				}
				rc.takeoverLate = append(rc.takeoverLate, fmt.Sprintf("conversation %s after %v (its owner, worker %d, killed at %s; calls: %s)",
					ck, took.Round(time.Millisecond), k.slot, k.at.Format("15:04:05.000"), strings.Join(calls, "; ")))
			}
		}
	}
}

// history lists the calls of key: when, which worker, what answer.
func history(reqs []request, key string) string {
	var parts []string
	for _, q := range reqs {
		if q.Key == key {
			parts = append(parts, fmt.Sprintf("%s w%d %s", q.at.Format("15:04:05.000"), q.worker, statusName(q.Status)))
		}
	}
	return strings.Join(parts, ", ")
}

func statusName(status int) string {
	if status == 0 {
		return "no answer"
	}
	return fmt.Sprint(status)
}

// check returns the targets a run missed.
func (rc recovery) check(t targets) []string {
	var missed []string
	if t.drain > 0 && rc.drain > t.drain {
		missed = append(missed, fmt.Sprintf("backlog drained %v after the last fault, target %v", rc.drain.Round(time.Millisecond), t.drain))
	}
	for _, w := range rc.stalled {
		missed = append(missed, fmt.Sprintf("window %v-%v accepted %d of %d published (under %.0f%% of the publish rate)", w.from, w.to, w.accepted, w.published, 100*t.windowShare))
	}
	if t.maxCalls > 0 && rc.maxCallsRouted > t.maxCalls {
		missed = append(missed, fmt.Sprintf("an event was called %d times (not counting the messages held to probe with), target %d", rc.maxCallsRouted, t.maxCalls))
	}
	for _, c := range rc.catchUp {
		// The target is the API's recovery (an outage, the 401 window),
		// judged where nothing else holds messages up: after a broker
		// restart or a SIGKILL, messages wait out ack_wait. Elsewhere
		// the figure is reported, not judged.
		if t.catchUp > 0 && c.took > t.catchUp && strings.HasPrefix(c.fault, "api") {
			missed = append(missed, fmt.Sprintf("the backlog left by %s was accepted %v after it ended, target %v; accepted last: %s", c.fault, c.took.Round(time.Millisecond), t.catchUp, c.last))
		}
	}
	if len(rc.takeoverLate) > 0 {
		missed = append(missed, fmt.Sprintf("a killed replica's calls were taken over late (target %v): %s", t.killTakeover, strings.Join(rc.takeoverLate[:min(len(rc.takeoverLate), 10)], ", ")))
	}
	return missed
}

// String prints the recovery figures.
func (rc recovery) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "drain after last fault: %v\n", rc.drain.Round(time.Millisecond))
	fmt.Fprintf(&b, "5 s windows (accepted/published):")
	for _, w := range rc.windows {
		mark := ""
		if w.excusedBy != "" {
			mark = "*"
		}
		fmt.Fprintf(&b, " %d/%d%s", w.accepted, w.published, mark)
	}
	fmt.Fprintf(&b, "  (* during an outage, the 401 window or a broker restart)\n")
	fmt.Fprintf(&b, "stalled windows:   %d\n", len(rc.stalled))
	fmt.Fprintf(&b, "kill takeover:     worst %v\n", rc.takeoverMax.Round(time.Millisecond))
	fmt.Fprintf(&b, "ordered takeover:  worst %v (%d conversations waiting after %d kills of the ordered route's owner)\n",
		rc.convoTakeoverMax.Round(time.Millisecond), rc.convoWaits, rc.ownerKills)
	for _, c := range rc.catchUp {
		fmt.Fprintf(&b, "caught up after:   %s in %v\n", c.fault, c.took.Round(time.Millisecond))
	}
	if n := len(rc.callsPerEvent); n > 0 {
		fmt.Fprintf(&b, "calls per event:   median %d, p99 %d, max %d (max %d apart from the replicas' probing messages); by answer: %s\n",
			rc.callsPerEvent[n/2], rc.callsPerEvent[n*99/100], rc.callsPerEvent[n-1], rc.maxCallsRouted, countsString(rc.callsByStatus))
	}
	for _, h := range rc.heavy {
		fmt.Fprintf(&b, "called most (not probing): %s\n", h)
	}
	return b.String()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
