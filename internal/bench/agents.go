package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/agentrelay/agentrelay/consumer"
)

// Issue 20's many-agents target, in the parity bench: "a route serving
// 1,000 trigger ids, one of them answering 409 for ever, runs at ≥ 95 % of
// the same load spread over 1 healthy agent, with 0 calls to the 409 agent
// beyond its probes".
//
// Both runs are agentrelay's release binary (one replica) on the same
// published events, against the same benchapi process: the events go
// round-robin to bench.events.<trigger id> over the scenario's ids. The
// baseline is a plain route with one fixed trigger id (the same load on 1
// healthy agent); the other takes its trigger id from the subject's third
// token, allowed by a pattern, and the API answers 409 for one of the ids.
// That agent's events never settle, so both runs are timed from the
// worker's start to the k-th settled event, k being the events of the
// healthy agents (the equivalent of the suite's Rate99: the same count in
// both runs). The ack monitor counts settles on the wire, benchapi the
// calls.

// Systems of the many-agents part.
const (
	AgentsBaseline = "one healthy agent"
	AgentsMany     = "many agents, one 409"
)

// AgentsScenario is a setting of the many-agents part.
type AgentsScenario struct {
	Name     string
	Latency  time.Duration
	InFlight int // max_in_flight
	// Agents is how many trigger ids the events are spread over,
	// round-robin: TriggerID(i) for event i.
	Agents int
	// Conflicting are the ids the API answers 409 for ever.
	Conflicting []string
}

// AgentsScenarios are issue 20's one: 1,000 agents, the one in the middle
// not runnable.
func AgentsScenarios() []AgentsScenario {
	sc := AgentsScenario{Name: "1,000 agents, one 409, 50 ms API, 256 in flight", Latency: 50 * time.Millisecond, InFlight: 256, Agents: 1000}
	sc.Conflicting = []string{sc.TriggerID(sc.Agents / 2)}
	return []AgentsScenario{sc}
}

// agentsPattern is what allowed_trigger_ids allows: every TriggerID.
const agentsPattern = "agtch_bench_*"

// TriggerID is the trigger id of event i.
func (sc AgentsScenario) TriggerID(i int) string {
	return fmt.Sprintf("agtch_bench_%04d", i%sc.Agents)
}

// subject is the subject of event i.
func (sc AgentsScenario) subject(i int) string { return paritySubject + "." + sc.TriggerID(i) }

// Healthy is how many of n events go to agents that answer 202.
func (sc AgentsScenario) Healthy(n int) int {
	k := 0
	for i := range n {
		if !slices.Contains(sc.Conflicting, sc.TriggerID(i)) {
			k++
		}
	}
	return k
}

// probeInterval is the least time between two probes of a stopped agent
// on one replica: the relay's default breaker.probe_interval, which then
// doubles up to max_probe_interval.
const probeInterval = consumer.DefaultProbeInterval

// ProbeBound is the most calls a stopped agent may receive: the calls that
// had reached it before its first 409 was written (inFlight, the first
// included), plus per replica one call to find the 409 for itself (or one
// admitted while the first 409 was on its way) and at most one probe per
// probeInterval over the window from the first 409 to the worker's exit.
func ProbeBound(inFlight, replicas int, window time.Duration) int {
	return inFlight + replicas*(1+int(max(window, 0)/probeInterval))
}

// AgentsRun is one run of the many-agents part.
type AgentsRun struct {
	Scenario string `json:"scenario"`
	System   string `json:"system"`
	Round    int    `json:"round"`
	Events   int    `json:"events"`  // published
	Counted  int    `json:"counted"` // the healthy agents' events: the run is timed to the Counted-th settle
	// Seconds is from the worker's start to the Counted-th settle.
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"` // Counted ÷ Seconds
	CPU     float64 `json:"cpu_seconds"`
	PeakRSS uint64  `json:"peak_rss"`
	// Keys is the distinct Idempotency-Keys the API accepted (202); Resent
	// the 202 calls beyond them.
	Keys   int `json:"keys"`
	Resent int `json:"resent"`
	// Lost is how many of the healthy agents' events the API never
	// accepted though Counted were settled.
	Lost int `json:"lost"`
	// DupSettles are acks or terms of a message already settled; Terms
	// the messages terminated (dead-lettered); Naks the naks seen.
	DupSettles int `json:"dup_settles"`
	Terms      int `json:"terms"`
	Naks       int `json:"naks"`
	// SettledBeyond is, in the many-agents run, how many messages were
	// settled besides the healthy agents' (the 409 agent's: must be 0).
	SettledBeyond int `json:"settled_beyond"`
	Replicas      int `json:"replicas"`
	// The 409 agent (many-agents run only): its calls, those that had
	// reached it before its first 409 was written, the window from then
	// to the worker's exit, and the most calls its probes allow.
	ConflictCalls    int     `json:"conflict_calls"`
	ConflictInFlight int     `json:"conflict_in_flight"`
	ConflictWindow   float64 `json:"conflict_window_seconds"`
	ProbeBound       int     `json:"probe_bound"`
}

// agentsRound runs each agents scenario's two systems once, the baseline
// first in even rounds.
func (e *parityEnv) agentsRound(ctx context.Context, round int) ([]AgentsRun, error) {
	if !e.o.runs(PartAgents) {
		return nil, nil
	}
	var out []AgentsRun
	for _, sc := range AgentsScenarios() {
		systems := []string{AgentsBaseline, AgentsMany}
		if round%2 == 1 {
			slices.Reverse(systems)
		}
		for _, sys := range systems {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			r, err := e.runAgents(ctx, sc, sys, round)
			if err != nil {
				return out, fmt.Errorf("%s, %s, round %d: %w", sc.Name, sys, round+1, err)
			}
			conflict := ""
			if sys == AgentsMany {
				conflict = fmt.Sprintf("  409 agent: %d calls, bound %d", r.ConflictCalls, r.ProbeBound)
			}
			e.logf("round %d  %-26s %-22s %7.0f ev/s  %6.2f s  cpu %5.2f s  keys %d  resent %d%s",
				round+1, "agents", sys, r.Rate, r.Seconds, r.CPU, r.Keys, r.Resent, conflict)
			out = append(out, r)
		}
	}
	return out, nil
}

// runAgents runs one system of sc: publish, start agentrelay, wait for the
// healthy agents' events to be settled, read its CPU and peak RSS, stop it,
// then read what the API and the ack monitor saw.
func (e *parityEnv) runAgents(ctx context.Context, sc AgentsScenario, sys string, round int) (AgentsRun, error) {
	n := e.o.Events
	r := AgentsRun{Scenario: sc.Name, System: sys, Round: round, Events: n, Counted: sc.Healthy(n), Replicas: 1}
	api := e.apis[apiKey(sc.Latency, sc.Conflicting...)]
	if err := e.apiReset(api); err != nil {
		return r, err
	}
	if err := e.resetStreamOn(ctx, n, sc.subject); err != nil {
		return r, err
	}
	mon, err := newAckMonitor(e.mon, parityStream, r.Counted, true)
	if err != nil {
		return r, err
	}
	defer mon.stop()
	cfg, err := e.agentsConfig(api, sc, sys)
	if err != nil {
		return r, err
	}
	lf, err := e.logFile(fmt.Sprintf("agents-%s-%d", strings.Fields(sys)[0], round))
	if err != nil {
		return r, err
	}
	defer lf.Close()
	cmd := exec.Command(e.bin("agentrelay"), "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = lf, lf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	var waitErr error
	select {
	case <-mon.done:
	case <-time.After(180 * time.Second):
		waitErr = fmt.Errorf("%d of the healthy agents' %d events settled within 180s", mon.stats().Final, r.Counted)
	case <-ctx.Done():
		waitErr = ctx.Err()
	}
	r.CPU, r.PeakRSS = procCPU(cmd.Process.Pid), procStatusOf(cmd.Process.Pid, "VmHWM")
	stopErr := stopProc(cmd)
	exited := time.Now()
	if waitErr != nil {
		return r, fmt.Errorf("%w (log: %s)", waitErr, lastLine(readFile(lf.Name())))
	}
	if stopErr != nil && !isSIGTERMExit(stopErr) {
		return r, fmt.Errorf("stopping: %w (log: %s)", stopErr, lastLine(readFile(lf.Name())))
	}
	st := mon.stats()
	r.Seconds = st.Reached.Sub(t0).Seconds()
	r.Rate = float64(r.Counted) / r.Seconds
	r.DupSettles, r.Terms, r.Naks = st.Dups, st.Terms, st.Naks
	s, err := e.apiStats(api)
	if err != nil {
		return r, err
	}
	r.Keys, r.Resent = s.Keys, s.Calls-s.Keys
	r.Lost = max(0, r.Counted-s.Keys)
	if sys == AgentsMany {
		r.SettledBeyond = max(0, st.Final-r.Counted)
		for _, id := range sc.Conflicting {
			c := s.Conflicts[id]
			r.ConflictCalls += c.Calls
			r.ConflictInFlight += c.BeforeFirstAnswer
			if !c.FirstAnswer.IsZero() {
				r.ConflictWindow = max(r.ConflictWindow, exited.Sub(c.FirstAnswer).Seconds())
			}
		}
		r.ProbeBound = ProbeBound(r.ConflictInFlight, r.Replicas, time.Duration(r.ConflictWindow*float64(time.Second)))
	}
	return r, nil
}

// agentsConfig writes agentrelay's configuration for sys: one route on
// every subject of the events, max_in_flight as the scenario says,
// everything else at its defaults; the baseline calls one fixed trigger
// id, the other takes it from the subject.
func (e *parityEnv) agentsConfig(api string, sc AgentsScenario, sys string) (string, error) {
	tok := filepath.Join(e.dir, "token")
	if err := os.WriteFile(tok, []byte(parityToken+"\n"), 0o600); err != nil {
		return "", err
	}
	var target string
	switch sys {
	case AgentsBaseline:
		target = "    trigger_id: " + parityTrigger + "\n"
	case AgentsMany:
		target = "    map:\n      trigger_id: 'tokens[2]'\n    allowed_trigger_ids: ['" + agentsPattern + "']\n"
	default:
		return "", errors.New("unknown system " + sys)
	}
	cfg := fmt.Sprintf(`nats:
  url: %s
api:
  base_url: %s
metrics:
  listen: 127.0.0.1:0
routes:
  - name: bench
    stream: %s
    subjects: [%s.*]
%s    token:
      file: %s
    max_in_flight: %d
`, e.natsURL, api, parityStream, paritySubject, target, tok, sc.InFlight)
	path := filepath.Join(e.dir, fmt.Sprintf("agentrelay-agents-%s.yaml", strings.Fields(sys)[0]))
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// AgentsSummary is the many-agents part of one scenario over its rounds.
type AgentsSummary struct {
	Scenario string
	Rounds   int
	// Rate and BaselineRate are medians; VsBaseline the median of the
	// ratios within a round.
	Rate, BaselineRate, VsBaseline float64
	// CPU per counted event, seconds, medians.
	CPUPerEvent, BaselineCPUPerEvent float64
	// The 409 agent: its most calls in a round, and that round's bound;
	// BoundMet when no round went past its bound.
	ConflictCalls, ConflictInFlight, ProbeBound, Replicas int
	ConflictWindow                                        float64
	BoundMet                                              bool
	// Over the many-agents runs, summed.
	Lost, Resent, DupSettles, SettledBeyond int
}

// SummarizeAgents takes medians over rounds, and ratios within a round.
func SummarizeAgents(runs []AgentsRun) []AgentsSummary {
	var out []AgentsSummary
	for _, sc := range AgentsScenarios() {
		base := map[int]AgentsRun{}
		for _, r := range runs {
			if r.Scenario == sc.Name && r.System == AgentsBaseline {
				base[r.Round] = r
			}
		}
		s := AgentsSummary{Scenario: sc.Name, BoundMet: true, ProbeBound: -1}
		var rate, brate, ratio, cpu, bcpu []float64
		for _, b := range base {
			brate = append(brate, b.Rate)
			bcpu = append(bcpu, b.CPU/float64(max(b.Counted, 1)))
		}
		for _, r := range runs {
			if r.Scenario != sc.Name || r.System != AgentsMany {
				continue
			}
			s.Rounds++
			rate = append(rate, r.Rate)
			cpu = append(cpu, r.CPU/float64(max(r.Counted, 1)))
			if b, ok := base[r.Round]; ok && b.Rate > 0 {
				ratio = append(ratio, r.Rate/b.Rate)
			}
			if r.ConflictCalls > r.ProbeBound {
				s.BoundMet = false
			}
			if s.ProbeBound < 0 || r.ConflictCalls-r.ProbeBound > s.ConflictCalls-s.ProbeBound {
				s.ConflictCalls, s.ConflictInFlight, s.ProbeBound, s.ConflictWindow = r.ConflictCalls, r.ConflictInFlight, r.ProbeBound, r.ConflictWindow
				s.Replicas = r.Replicas
			}
			s.Lost += r.Lost
			s.Resent += r.Resent
			s.DupSettles += r.DupSettles
			s.SettledBeyond += r.SettledBeyond
		}
		if s.Rounds == 0 {
			continue
		}
		s.Rate, s.BaselineRate, s.VsBaseline = median(rate), median(brate), median(ratio)
		s.CPUPerEvent, s.BaselineCPUPerEvent = median(cpu), median(bcpu)
		out = append(out, s)
	}
	return out
}

// AgentsTargets checks issue 20's many-agents target against the summaries.
func AgentsTargets(sums []AgentsSummary) []Target {
	var ts []Target
	for _, s := range sums {
		ts = append(ts,
			Target{What: s.Scenario + ": events/s", Want: "≥ 95 % of the same load on 1 healthy agent",
				Got: fmt.Sprintf("%.1f %% (%.0f vs %.0f)", 100*s.VsBaseline, s.Rate, s.BaselineRate), Met: s.VsBaseline >= 0.95},
			Target{What: s.Scenario + ": calls to the 409 agent", Want: "none beyond its probes",
				Got: fmt.Sprintf("%d, bound %d = %d in flight at its first 409 + %d × (1 + ⌊%.1f s ÷ %v⌋)",
					s.ConflictCalls, s.ProbeBound, s.ConflictInFlight, s.Replicas, s.ConflictWindow, probeInterval),
				Met: s.BoundMet},
			Target{What: s.Scenario + ": the other agents' events", Want: "0 lost, 0 double",
				Got: fmt.Sprintf("%d lost, %d calls re-sent, %d settled twice, %d of the 409 agent's settled", s.Lost, s.Resent, s.DupSettles, s.SettledBeyond),
				Met: s.Lost == 0 && s.Resent == 0 && s.DupSettles == 0 && s.SettledBeyond == 0})
	}
	return ts
}

// WriteAgents writes the many-agents part in Markdown: medians, then issue
// 20's target met or not.
func WriteAgents(w io.Writer, runs []AgentsRun) {
	sums := SummarizeAgents(runs)
	if len(sums) == 0 {
		return
	}
	fmt.Fprintf(w, "### Many agents on one route (issue 20; medians of %d rounds)\n\n", sums[0].Rounds)
	fmt.Fprintln(w, "Timed from agentrelay's start to the last of the healthy agents' events settled (the same count in both runs).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | route | events/s | vs one healthy agent | CPU per event | calls to the 409 agent | its probe bound | lost | calls re-sent | settled twice |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range sums {
		fmt.Fprintf(w, "| %s | %s | %.0f | | %.0f µs | | | | | |\n", s.Scenario, AgentsBaseline, s.BaselineRate, s.BaselineCPUPerEvent*1e6)
		fmt.Fprintf(w, "| %s | %s | %.0f | %.1f %% | %.0f µs | %d | %d | %d | %d | %d |\n", s.Scenario, AgentsMany, s.Rate, 100*s.VsBaseline,
			s.CPUPerEvent*1e6, s.ConflictCalls, s.ProbeBound, s.Lost, s.Resent, s.DupSettles)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Issue 20's many-agents target")
	fmt.Fprintln(w)
	writeTargets(w, AgentsTargets(sums))
	fmt.Fprintln(w)
}
