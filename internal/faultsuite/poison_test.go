package faultsuite

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
)

// The poison mix (issue 17): events the API always fails, for their input
// alone (an API bug one input triggers: 500 for ever, a hang past the
// timeout for ever, a 429 for ever), mixed into a steady stream of good
// events on an unordered and an ordered route, and one conversation whose
// first event always fails with many events queued behind it. Route health
// must tell those events' failures from an outage: no route is ever
// stopped by them, the good events flow at the rate they are published,
// every bad event is dead-lettered within its own budget with its last
// answer in the letter, and on the ordered route the failing conversation
// holds only itself.

// poisonMix configures a poison-mix profile.
type poisonMix struct {
	bad500, badHang, bad429 float64 // shares of the events that always fail so
	convoKeys               int     // conversation keys of the ordered route
	blocked                 int     // events queued behind the failing first event of one conversation
	targets                 poisonTargets
}

// poisonTargets are a poison-mix profile's targets; a zero field is not
// checked.
type poisonTargets struct {
	// validShare: in every 5 s window after the first, the good events
	// (not those waiting behind a failing event of their own conversation)
	// are accepted at least at this share of the rate they are published.
	validShare float64
	// otherKeyWait: an event of the ordered route, other than those of a
	// conversation with a failing event before them, is accepted within
	// this of its publication.
	otherKeyWait time.Duration
	// neverStopped: no route is ever stopped, on any replica: the bad
	// events are not an outage.
	neverStopped bool
}

// Input markers the emulator fails for ever, and what the dead letter of
// such an event must say of its last call.
var poisonMarkers = []struct {
	marker        string
	fault         emulator.Fault
	status, class string
}{
	{"#fs-bad-500", emulator.Fault{Kind: emulator.FaultServerError, Status: 500}, "500", "server_error"},
	{"#fs-bad-hang", emulator.Fault{Kind: emulator.FaultHang}, "", "timeout"},
	{"#fs-bad-429", emulator.Fault{Kind: emulator.FaultRateLimit, RetryAfter: "1"}, "429", "rate_limited"},
}

// poisonFaults are the emulator's faults tied to those markers.
func poisonFaults() []emulator.InputFault {
	var out []emulator.InputFault
	for _, m := range poisonMarkers {
		out = append(out, emulator.InputFault{Marker: m.marker, Fault: m.fault})
	}
	return out
}

// blockedKey is the conversation whose first event always fails.
const blockedKey = "fs-blocked"

// makePoisonManifest plans n events of the orders and convo routes, a
// share of them bad, and first of all the blocked conversation: its failing
// event, then pm.blocked good ones.
func makePoisonManifest(rng *rand.Rand, n int, pm poisonMix) []planned {
	out := make([]planned, 0, n)
	add := func(route string, bad int, key string) {
		i := len(out)
		id := fmt.Sprintf("ev-%06d", i)
		input := fmt.Sprintf("event %06d: %s", i, texts[rng.IntN(len(texts))])
		p := planned{Event: Event{MsgID: id, Key: id, Kind: KindAccept, TriggerID: triggerOrders}, subject: "events." + route + "." + id}
		if bad >= 0 {
			m := poisonMarkers[bad]
			input += " " + m.marker
			p.Kind, p.WantReason, p.WantStatus, p.WantClass = KindDeadLetter, string(deadletter.ReasonMaxAttempts), m.status, m.class
		}
		p.Input = input
		fields := map[string]any{"input": input}
		if route == "convo" {
			p.TriggerID, p.ConversationKey = triggerConvo, key
			fields["conversation_key"] = key
		}
		b, err := json.Marshal(fields)
		if err != nil {
			panic(err)
		}
		p.body = b
		out = append(out, p)
	}
	if pm.blocked > 0 {
		add("convo", 0, blockedKey)
		for range pm.blocked {
			add("convo", -1, blockedKey)
		}
	}
	for len(out) < n {
		route := []string{"orders", "convo"}[rng.IntN(2)]
		key := fmt.Sprintf("fs-convo-%d", rng.IntN(max(pm.convoKeys, 1)))
		bad := -1
		switch u := rng.Float64(); {
		case u < pm.bad500:
			bad = 0
		case u < pm.bad500+pm.badHang:
			bad = 1
		case u < pm.bad500+pm.badHang+pm.bad429:
			bad = 2
		}
		add(route, bad, key)
	}
	return out
}

// heldByDesign reports, for each event of a manifest, whether it waits
// behind an event of its own conversation that always fails: ordered
// delivery keeps it waiting until that one is dead-lettered.
func heldByDesign(events []planned) []bool {
	held := make([]bool, len(events))
	failing := map[string]bool{}
	for i := range events {
		e := &events[i]
		if e.ConversationKey == "" {
			continue
		}
		if failing[e.ConversationKey] {
			held[i] = true
		}
		if e.Kind == KindDeadLetter && e.WantReason == string(deadletter.ReasonMaxAttempts) {
			failing[e.ConversationKey] = true
		}
	}
	return held
}

// pauseWatch polls the route consumers while a run goes and records every
// pause it sees.
type pauseWatch struct {
	mu     sync.Mutex
	pauses []string
	stop   chan struct{}
	done   chan struct{}
}

func (r *run) watchPauses(routes ...string) *pauseWatch {
	w := &pauseWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for _, route := range routes {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if c, err := r.js.Consumer(ctx, workStream, "agentrelay-"+route); err == nil {
					if info, err := c.Info(ctx); err == nil && info.Paused {
						w.mu.Lock()
						w.pauses = append(w.pauses, fmt.Sprintf("%s paused at %s", route, time.Now().Format("15:04:05.000")))
						w.mu.Unlock()
					}
				}
				cancel()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *pauseWatch) end() []string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pauses
}

// poisonFigures is what a poison-mix run measured.
type poisonFigures struct {
	windows      []window // good events not held by design, accepted/published per 5 s
	stalled      []window
	otherKeyMax  time.Duration // the ordered route's worst wait of an event not held by design
	otherKeyLate []string
	badCalls     map[string][]int // calls per bad event, by class, sorted
	overBudget   []string
	pauses       []string
	stops        int // "route stopped" lines in the workers' logs
}

// measurePoison computes a poison-mix run's figures.
func (r *run) measurePoison(pauses []string) poisonFigures {
	pm := r.p.poison
	pf := poisonFigures{badCalls: map[string][]int{}, pauses: pauses, stops: r.fig.breakerOpens}
	reqs := r.api.rec.requests()
	firstAccept := map[string]time.Time{}
	calls := map[string]int{}
	for _, q := range reqs {
		calls[q.Key]++
		if q.Status == 202 {
			if t, ok := firstAccept[q.Key]; !ok || q.done.Before(t) {
				firstAccept[q.Key] = q.done
			}
		}
	}
	held := heldByDesign(r.events)
	// Its budget: max_attempts failures of its own. (A replica counts a
	// message's timeouts to max_timeouts, 3, itself; one redelivered to
	// the other replica may time out there too, within max_attempts.)
	budget := map[string]int{"server_error": consumer.DefaultMaxAttempts, "rate_limited": consumer.DefaultMaxAttempts, "timeout": consumer.DefaultMaxAttempts}
	for i := range r.events {
		e := &r.events[i]
		if !e.stored {
			continue
		}
		switch {
		case e.Kind == KindDeadLetter:
			n := calls[e.Key]
			pf.badCalls[e.WantClass] = append(pf.badCalls[e.WantClass], n)
			if n > budget[e.WantClass] {
				pf.overBudget = append(pf.overBudget, fmt.Sprintf("%s (%s) called %d times, budget %d", e.MsgID, e.WantClass, n, budget[e.WantClass]))
			}
		case e.ConversationKey != "" && !held[i]:
			if t, ok := firstAccept[e.Key]; ok {
				wait := t.Sub(e.published)
				pf.otherKeyMax = max(pf.otherKeyMax, wait)
				if pm.targets.otherKeyWait > 0 && wait > pm.targets.otherKeyWait {
					pf.otherKeyLate = append(pf.otherKeyLate, fmt.Sprintf("%s (key %s) accepted %v after publication", e.MsgID, e.ConversationKey, wait.Round(time.Millisecond)))
				}
			}
		}
	}
	for _, c := range pf.badCalls {
		slices.Sort(c)
	}
	for from := windowLen; from < r.p.publishFor; from += windowLen {
		w := window{from: from, to: min(from+windowLen, r.p.publishFor)}
		a, b := r.publishStart.Add(w.from), r.publishStart.Add(w.to)
		for i := range r.events {
			e := &r.events[i]
			if !e.stored || e.Kind != KindAccept || held[i] {
				continue
			}
			if !e.published.Before(a) && e.published.Before(b) {
				w.published++
			}
			if t := firstAccept[e.Key]; !t.Before(a) && t.Before(b) {
				w.accepted++
			}
		}
		pf.windows = append(pf.windows, w)
		if pm.targets.validShare > 0 && float64(w.accepted) < pm.targets.validShare*float64(w.published) {
			pf.stalled = append(pf.stalled, w)
		}
	}
	return pf
}

// check returns the targets a poison-mix run missed.
func (pf poisonFigures) check(t poisonTargets) []string {
	var missed []string
	for _, w := range pf.stalled {
		missed = append(missed, fmt.Sprintf("window %v-%v accepted %d of the %d good events published in it (under %.0f%%)", w.from, w.to, w.accepted, w.published, 100*t.validShare))
	}
	if len(pf.otherKeyLate) > 0 {
		missed = append(missed, fmt.Sprintf("%d events of other conversations waited over %v: %s", len(pf.otherKeyLate), t.otherKeyWait, strings.Join(pf.otherKeyLate[:min(len(pf.otherKeyLate), 10)], ", ")))
	}
	if len(pf.overBudget) > 0 {
		missed = append(missed, fmt.Sprintf("%d bad events were called beyond their budget: %s", len(pf.overBudget), strings.Join(pf.overBudget[:min(len(pf.overBudget), 10)], ", ")))
	}
	if t.neverStopped && (pf.stops > 0 || len(pf.pauses) > 0) {
		missed = append(missed, fmt.Sprintf("the bad events stopped a route: %d route stops in the logs, pauses seen: %s", pf.stops, strings.Join(pf.pauses[:min(len(pf.pauses), 5)], ", ")))
	}
	return missed
}

// String prints a poison-mix run's figures.
func (pf poisonFigures) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "good events per 5 s window (accepted/published, not held behind a failing event of their conversation):")
	for _, w := range pf.windows {
		fmt.Fprintf(&b, " %d/%d", w.accepted, w.published)
	}
	fmt.Fprintf(&b, "\nordered route, other conversations: worst wait %v\n", pf.otherKeyMax.Round(time.Millisecond))
	for _, class := range []string{"server_error", "timeout", "rate_limited"} {
		if c := pf.badCalls[class]; len(c) > 0 {
			fmt.Fprintf(&b, "bad events (%s): %d, calls each median %d, max %d\n", class, len(c), c[len(c)/2], c[len(c)-1])
		}
	}
	fmt.Fprintf(&b, "route stops: %d; consumer pauses seen: %d\n", pf.stops, len(pf.pauses))
	return b.String()
}
