package bench

import (
	"strings"
	"testing"
	"time"
)

// A stopped agent may receive the calls already on their way to it, one
// call per replica to find the 409 for itself, and a probe per probe
// interval after its first 409.
func TestProbeBound(t *testing.T) {
	for _, c := range []struct {
		inFlight, replicas int
		window             time.Duration
		want               int
	}{
		{1, 1, 0, 2},
		{1, 1, 999 * time.Millisecond, 2},
		{1, 1, 4500 * time.Millisecond, 6},
		{2, 3, 10 * time.Second, 2 + 3*11},
		{1, 1, -time.Second, 2}, // a clock step never lowers it below the calls seen
	} {
		if got := ProbeBound(c.inFlight, c.replicas, c.window); got != c.want {
			t.Errorf("ProbeBound(%d, %d, %v) = %d, want %d", c.inFlight, c.replicas, c.window, got, c.want)
		}
	}
}

func TestAgentsScenarioSpreadsEventsRoundRobin(t *testing.T) {
	sc := AgentsScenarios()[0]
	if sc.Agents != 1000 || len(sc.Conflicting) != 1 {
		t.Fatalf("%+v: want 1,000 agents, one of them answering 409", sc)
	}
	if sc.TriggerID(0) != sc.TriggerID(1000) || sc.TriggerID(1) == sc.TriggerID(0) || !strings.HasPrefix(sc.TriggerID(7), "agtch_bench_") {
		t.Errorf("ids %s %s %s: want event i on id i mod 1,000", sc.TriggerID(0), sc.TriggerID(1), sc.TriggerID(1000))
	}
	if sc.subject(42) != "bench.events."+sc.TriggerID(42) {
		t.Errorf("subject %s", sc.subject(42))
	}
	if got := sc.Healthy(20000); got != 19980 {
		t.Errorf("healthy events of 20,000: %d, want 19,980", got)
	}
}

// The rate is compared with the baseline of the same round; one round past
// its probe bound, or one event lost, fails the target.
func TestSummarizeAgentsTakesRatiosWithinARoundAndFailsOnAnyRound(t *testing.T) {
	sc := AgentsScenarios()[0].Name
	var runs []AgentsRun
	for round, f := range []float64{1, 0.5, 1.1} { // round 2 ran on a busy machine
		runs = append(runs,
			AgentsRun{Scenario: sc, System: AgentsBaseline, Round: round, Counted: 1000, Rate: 4000 * f, CPU: 0.1},
			AgentsRun{Scenario: sc, System: AgentsMany, Round: round, Counted: 1000, Rate: 3880 * f, CPU: 0.12,
				ConflictCalls: 3, ConflictInFlight: 1, ProbeBound: 6, ConflictWindow: 4.2, Replicas: 1},
		)
	}
	sums := SummarizeAgents(runs)
	if len(sums) != 1 {
		t.Fatalf("%d summaries", len(sums))
	}
	s := sums[0]
	if s.Rounds != 3 || s.VsBaseline < 0.9699 || s.VsBaseline > 0.9701 || !s.BoundMet {
		t.Errorf("summary %+v: want 97 %% of the baseline in every round, bound met", s)
	}
	for _, tg := range AgentsTargets(sums) {
		if !tg.Met {
			t.Errorf("target %q not met: %s", tg.What, tg.Got)
		}
	}

	runs[3].ConflictCalls = 7 // round 2: one call past its bound
	runs[5].Lost = 1
	s = SummarizeAgents(runs)[0]
	if s.BoundMet || s.ConflictCalls != 7 || s.Lost != 1 {
		t.Errorf("summary %+v: want the round past its bound reported, and the lost event", s)
	}
	met := map[string]bool{}
	for _, tg := range AgentsTargets([]AgentsSummary{s}) {
		met[strings.TrimPrefix(tg.What, sc+": ")] = tg.Met
	}
	if !met["events/s"] || met["calls to the 409 agent"] || met["the other agents' events"] {
		t.Errorf("targets met %v: want only events/s", met)
	}
}
