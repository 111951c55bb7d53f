package faultsuite

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
)

// Many agents on one route (issue 20): the agents route takes each event's
// trigger id from its subject (events.agents.<trigger id>), and every one
// of its 50 agents has a health of its own. Three of them fail, each in its
// own way: one is not runnable (409) until late in the run, the token may
// not call one (403), and one's calls hang past the timeout until it
// recovers. Each agent's trouble must stay its own: the other agents'
// events are accepted as they are published, the route is never stopped
// and its consumer never paused, the not-runnable agent is called no more
// than its probes allow, and nothing is lost or accepted twice.

// The agents of the agents route, and the three that fail.
const (
	agentCount       = 50
	agentPattern     = "agtch_fs_agent_*"  // the route's allowed_trigger_ids
	agentNotRunnable = "agtch_fs_agent_07" // 409 until the run makes it runnable
	agentForbidden   = "agtch_fs_agent_23" // the token may not call it: 403
	agentHang        = "agtch_fs_agent_41" // its calls hang past the timeout until it recovers

	// agentHangMarker is in every input for agentHang: the emulator's
	// ByInput fault (limited to that trigger id) hangs them until the run
	// takes the fault away.
	agentHangMarker = "#fs-agent-hang"
)

// agentID is the trigger id of the agents route's agent i.
func agentID(i int) string { return fmt.Sprintf("agtch_fs_agent_%02d", i) }

// agentTriggers are the agents route's trigger ids.
func agentTriggers() []string {
	ids := make([]string, agentCount)
	for i := range ids {
		ids[i] = agentID(i)
	}
	return ids
}

// agentHangFault hangs agentHang's calls (its events carry the marker)
// until recoverHangingAgent removes it.
var agentHangFault = emulator.InputFault{Marker: agentHangMarker, Fault: emulator.Fault{Kind: emulator.FaultHang, TriggerID: agentHang}}

// agentMix configures a many-agents profile.
type agentMix struct {
	runnableAt float64 // when (a fraction of publishFor) agentNotRunnable becomes runnable
	recoverAt  float64 // when (a fraction of publishFor) agentHang's calls stop hanging
	targets    agentTargets
}

// agentTargets are a many-agents profile's targets; a zero field is not
// checked.
type agentTargets struct {
	// healthyWait: every event of a healthy agent is accepted within this
	// of its publication. Such events are published every few
	// milliseconds, so a stall of delivery longer than this, anywhere in
	// the run, would leave the events published as it began waiting
	// longer: this is "no stall of more than healthyWait", judged on every
	// event rather than on an average.
	healthyWait time.Duration
	// isolated: the route is never stopped (no "route stopped" in any
	// replica's log) and its consumer never seen paused; no healthy agent
	// is ever stopped; and the not-runnable and the hanging agents were
	// each stopped on at least one replica (their trouble was found as
	// theirs, not borne by their events' budgets).
	isolated bool
	// probeBound: while it was not runnable, the not-runnable agent was
	// answered 409 no more than each replica's first call and the calls in
	// flight with it, plus one probe per probe interval (1 s, the
	// shortest) per replica.
	probeBound bool
}

// makeAgentManifest plans n events of the agents route, spread evenly over
// the 50 agents: each run of 50 events has one for every agent, in a
// shuffled order, so that every agent, the failing ones included, has
// events from the first second to the last.
func makeAgentManifest(rng *rand.Rand, n int) []planned {
	out := make([]planned, 0, n)
	var order []int
	for i := range n {
		if len(order) == 0 {
			order = rng.Perm(agentCount)
		}
		agent := agentID(order[0])
		order = order[1:]
		id := fmt.Sprintf("ev-%06d", i)
		input := fmt.Sprintf("event %06d for %s: %s", i, agent, texts[rng.IntN(len(texts))])
		p := planned{Event: Event{MsgID: id, Key: id, TriggerID: agent, Kind: KindAccept}, subject: "events.agents." + agent}
		switch agent {
		case agentNotRunnable:
			p.Kind = KindNotRunnable
		case agentForbidden:
			p.Kind, p.WantReason, p.WantStatus = KindDeadLetter, string(deadletter.ReasonForbidden), "403"
		case agentHang:
			// Accepted once the agent recovers; or, rarely, dead-lettered
			// when a replica that had not yet stopped the agent timed it
			// out as its own failure up to max_timeouts.
			input += " " + agentHangMarker
			p.Kind, p.WantReason, p.WantClass = KindAcceptOrDeadLetter, string(deadletter.ReasonMaxAttempts), "timeout"
		}
		p.Input = input
		b, err := json.Marshal(map[string]any{"input": input})
		if err != nil {
			panic(err)
		}
		p.body = b
		out = append(out, p)
	}
	return out
}

// makeAgentRunnable makes agentNotRunnable runnable, once it has answered
// 409 (so that the agent was stopped for a while whatever the timing).
func (r *run) makeAgentRunnable() {
	deadline := time.Now().Add(30 * time.Second)
	for r.api.rec.countTriggerStatus(agentNotRunnable, 409) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.api.emu.SetRunnable(agentNotRunnable, true)
	r.mu.Lock()
	r.agentRunnable = time.Now()
	r.mu.Unlock()
}

// recoverHangingAgent ends agentHang's hangs: the emulator's faults stay
// as they are, without its marker.
func (r *run) recoverHangingAgent() {
	emu := r.api.emu
	f := emu.Faults()
	f.ByInput = slices.DeleteFunc(slices.Clone(f.ByInput), func(b emulator.InputFault) bool { return b.Marker == agentHangMarker })
	emu.SetFaults(f)
	r.mu.Lock()
	r.agentRecovered = time.Now()
	r.mu.Unlock()
}

// agentFigures is what a many-agents run measured.
type agentFigures struct {
	healthy                   int           // healthy agents' events
	waitP50, waitP99, worst   time.Duration // their publication to first acceptance
	late                      []string      // those over the target
	minWindow                 window        // the 1 s window with the lowest share of acceptances to publications
	notRunnableFor            time.Duration // from the first publication to runnable
	calls409, bound409        int
	calls409ByWorker          map[int]int
	forbiddenEvents, calls403 int
	hangFor                   time.Duration // from the first publication to the recovery
	hangEvents, hangCalls     int           // calls that hung (no answer) while the agent hung
	hangAccepted, hangDead    int
	stops                     map[string]int // "agent stopped" lines, by "trigger id (condition)"
	resumes                   map[string]int // "agent resumed" lines, by trigger id
	healthyStopped            []string
	routeStops                int
	pauses                    []string
}

// measureAgents computes a many-agents run's figures.
func (r *run) measureAgents(pauses []string) agentFigures {
	af := agentFigures{
		calls409ByWorker: map[int]int{}, stops: map[string]int{}, resumes: map[string]int{},
		routeStops: r.fig.breakerOpens, pauses: pauses,
		hangAccepted: r.fig.report.EitherAccepted, hangDead: r.fig.report.EitherDeadLettered,
	}
	target := r.p.agents.targets.healthyWait
	type tk struct{ trigger, key string }
	firstAccept := map[tk]time.Time{}
	reqs := r.api.rec.requests()
	for _, q := range reqs {
		if q.Status == 202 {
			k := tk{q.TriggerID, q.Key}
			if t, ok := firstAccept[k]; !ok || q.done.Before(t) {
				firstAccept[k] = q.done
			}
		}
		switch {
		case q.TriggerID == agentNotRunnable && q.Status == 409:
			af.calls409++
			af.calls409ByWorker[q.worker]++
		case q.TriggerID == agentForbidden && q.Status == 403:
			af.calls403++
		case q.TriggerID == agentHang && q.Status == 0 && q.at.Before(r.agentRecovered):
			af.hangCalls++
		}
	}
	af.notRunnableFor = r.agentRunnable.Sub(r.publishStart)
	af.bound409 = r.p.workers * (int(af.notRunnableFor/consumer.DefaultProbeInterval) + 2)
	af.hangFor = r.agentRecovered.Sub(r.publishStart)

	var waits []time.Duration
	windows := make([]window, int((r.p.publishFor+time.Second-1)/time.Second))
	for i := range windows {
		windows[i] = window{from: time.Duration(i) * time.Second, to: time.Duration(i+1) * time.Second}
	}
	inWindow := func(t time.Time) int {
		if t.Before(r.publishStart) {
			return -1
		}
		return int(t.Sub(r.publishStart) / time.Second)
	}
	for i := range r.events {
		e := &r.events[i]
		if !e.stored {
			continue
		}
		switch e.TriggerID {
		case agentForbidden:
			af.forbiddenEvents++
			continue
		case agentHang:
			af.hangEvents++
			continue
		case agentNotRunnable:
			continue
		}
		af.healthy++
		t, ok := firstAccept[tk{e.TriggerID, e.Key}]
		if !ok {
			continue // lost: the checker says so
		}
		wait := t.Sub(e.published)
		waits = append(waits, wait)
		if target > 0 && wait > target {
			af.late = append(af.late, fmt.Sprintf("%s (%s) accepted %v after publication", e.MsgID, e.TriggerID, wait.Round(time.Millisecond)))
		}
		if w := inWindow(e.published); w >= 0 && w < len(windows) {
			windows[w].published++
		}
		if w := inWindow(t); w >= 0 && w < len(windows) {
			windows[w].accepted++
		}
	}
	slices.Sort(waits)
	if n := len(waits); n > 0 {
		af.waitP50, af.waitP99, af.worst = waits[n/2], waits[n*99/100], waits[n-1]
	}
	for _, w := range windows {
		if w.published == 0 {
			continue
		}
		if m := af.minWindow; m.published == 0 || float64(w.accepted)/float64(w.published) < float64(m.accepted)/float64(m.published) {
			af.minWindow = w
		}
	}

	healthy := func(id string) bool { return id != agentNotRunnable && id != agentHang && id != agentForbidden }
	for _, path := range r.fleet.logs() {
		for _, l := range agentLogLines(path) {
			switch {
			case strings.HasPrefix(l.Msg, "agent stopped:"):
				af.stops[fmt.Sprintf("%s (%s)", l.TriggerID, l.Condition)]++
				if healthy(l.TriggerID) {
					af.healthyStopped = append(af.healthyStopped, fmt.Sprintf("%s (%s, at %s)", l.TriggerID, l.Condition, l.Time))
				}
			case strings.HasPrefix(l.Msg, "agent probe succeeded"):
				af.resumes[l.TriggerID]++
			}
		}
	}
	return af
}

// agentLogLine is what the suite reads of a worker's log line about an
// agent's health.
type agentLogLine struct {
	Time      string `json:"time"`
	Msg       string `json:"msg"`
	TriggerID string `json:"trigger_id"`
	Condition string `json:"condition"`
}

// agentLogLines reads a worker log's lines about agents' health; a log it
// cannot read gives none (the run's leak check reports it).
func agentLogLines(path string) []agentLogLine {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []agentLogLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"msg":"agent `)) {
			continue
		}
		var l agentLogLine
		if json.Unmarshal(line, &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// stoppedAgent reports whether an agent was stopped (with any condition)
// on some replica.
func (af agentFigures) stoppedAgent(id string) bool {
	for k, n := range af.stops {
		if strings.HasPrefix(k, id+" ") && n > 0 {
			return true
		}
	}
	return false
}

// check returns the targets a many-agents run missed.
func (af agentFigures) check(t agentTargets) []string {
	var missed []string
	if len(af.late) > 0 {
		missed = append(missed, fmt.Sprintf("%d healthy agents' events waited over %v: %s", len(af.late), t.healthyWait, strings.Join(af.late[:min(len(af.late), 10)], ", ")))
	}
	if t.isolated {
		if af.routeStops > 0 || len(af.pauses) > 0 {
			missed = append(missed, fmt.Sprintf("one agent's trouble stopped the route: %d route stops in the logs, pauses seen: %s", af.routeStops, strings.Join(af.pauses[:min(len(af.pauses), 5)], ", ")))
		}
		if len(af.healthyStopped) > 0 {
			missed = append(missed, fmt.Sprintf("healthy agents were stopped: %s", strings.Join(af.healthyStopped[:min(len(af.healthyStopped), 10)], ", ")))
		}
		for _, id := range []string{agentNotRunnable, agentHang} {
			if !af.stoppedAgent(id) {
				missed = append(missed, fmt.Sprintf("%s was never stopped on any replica: its trouble was not found as its own", id))
			}
		}
	}
	if t.probeBound && af.calls409 > af.bound409 {
		missed = append(missed, fmt.Sprintf("the not-runnable agent was answered 409 %d times in %v (by replica %v), over the probes' bound of %d",
			af.calls409, af.notRunnableFor.Round(time.Millisecond), af.calls409ByWorker, af.bound409))
	}
	return missed
}

// String prints a many-agents run's figures.
func (af agentFigures) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "healthy agents' events: %d, publication to acceptance p50 %v, p99 %v, worst %v\n",
		af.healthy, af.waitP50.Round(time.Millisecond), af.waitP99.Round(time.Millisecond), af.worst.Round(time.Millisecond))
	if m := af.minWindow; m.published > 0 {
		fmt.Fprintf(&b, "healthy agents, lowest 1 s window: %d accepted / %d published (%v-%v)\n", m.accepted, m.published, m.from, m.to)
	}
	fmt.Fprintf(&b, "409 agent: not runnable for %v, answered 409 %d times (by replica %v; probe bound %d)\n",
		af.notRunnableFor.Round(time.Millisecond), af.calls409, af.calls409ByWorker, af.bound409)
	fmt.Fprintf(&b, "403 agent: %d events, %d calls answered 403\n", af.forbiddenEvents, af.calls403)
	fmt.Fprintf(&b, "hanging agent: hung for %v, %d events (%d accepted once, %d dead-lettered max_attempts/timeout), %d calls hung\n",
		af.hangFor.Round(time.Millisecond), af.hangEvents, af.hangAccepted, af.hangDead, af.hangCalls)
	fmt.Fprintf(&b, "agent stops (all replicas): %s; resumes: %s\n", countsString(af.stops), countsString(af.resumes))
	fmt.Fprintf(&b, "route stops: %d; consumer pauses seen: %d\n", af.routeStops, len(af.pauses))
	return b.String()
}

// The many-agents manifest spreads its events evenly over the 50 agents
// (each run of 50 has one for every agent, so the failing ones have events
// from the start), and says of each what must become of it.
func TestAgentManifestSpreadsEventsOverEveryAgent(t *testing.T) {
	events := makeAgentManifest(rand.New(rand.NewPCG(1, 2)), 4*agentCount+7)
	for from := 0; from+agentCount <= len(events); from += agentCount {
		seen := map[string]bool{}
		for _, e := range events[from : from+agentCount] {
			seen[e.TriggerID] = true
		}
		if len(seen) != agentCount {
			t.Errorf("events %d-%d go to %d agents, want all %d", from, from+agentCount-1, len(seen), agentCount)
		}
	}
	kinds := map[string]Kind{}
	for _, e := range events {
		if e.subject != "events.agents."+e.TriggerID {
			t.Errorf("%s: subject %s for agent %s", e.MsgID, e.subject, e.TriggerID)
		}
		if k, ok := kinds[e.TriggerID]; ok && k != e.Kind {
			t.Errorf("agent %s has events of kinds %s and %s", e.TriggerID, k, e.Kind)
		}
		kinds[e.TriggerID] = e.Kind
		if hangs := strings.Contains(e.Input, agentHangMarker); hangs != (e.TriggerID == agentHang) || !bytes.Contains(e.body, []byte(agentHangMarker)) && hangs {
			t.Errorf("%s (agent %s): input %q", e.MsgID, e.TriggerID, e.Input)
		}
	}
	want := map[string]Kind{agentNotRunnable: KindNotRunnable, agentForbidden: KindDeadLetter, agentHang: KindAcceptOrDeadLetter, agentID(0): KindAccept}
	for id, k := range want {
		if kinds[id] != k {
			t.Errorf("agent %s: events of kind %s, want %s", id, kinds[id], k)
		}
	}
}
