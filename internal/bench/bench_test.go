package bench_test

import (
	"bytes"
	"cmp"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/internal/bench"
)

// TestBenchSmoke runs the benchmark briefly, with the workers in this
// process, to prove that it runs and produces numbers. It asserts no speed:
// make bench measures (see BENCHMARKS.md).
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and the emulator")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results, err := bench.Run(ctx, bench.Options{
		Scenarios: []string{"d"},
		Reps:      1,
		Scale:     0.005, // 200 events, 20 of them poison
		InProcess: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("%d results, want 2 (one per system)", len(results))
	}
	for _, r := range results {
		want := 200
		if r.TimedOut || r.Events != want || r.Rate <= 0 || r.P99 <= 0 || len(r.Workers) != 1 {
			t.Errorf("%s/%s: timed out %v, %d events (want %d), %.0f/s, p99 %v, %d workers",
				r.Scenario, r.System, r.TimedOut, r.Events, want, r.Rate, r.P99, len(r.Workers))
		}
		if r.Terms != 20 {
			t.Errorf("%s: %d messages dead-lettered, want the 20 poison ones", r.System, r.Terms)
		}
	}
	var md bytes.Buffer
	bench.WriteMarkdown(&md, bench.Summarize(results))
	if !strings.Contains(md.String(), "| (d) latency 0") || !strings.Contains(md.String(), "agentrelay") {
		t.Errorf("markdown without the expected rows:\n%s", md.String())
	}
}

// TestAgentsBenchSmoke runs make bench's many-agents part briefly, with
// every part a process built from this repository (agentrelay, benchapi,
// nats-server), to prove that it runs and that what it checks holds: the
// agent answering 409 gets no calls beyond its probes, and every other
// agent's event is accepted once and settled once. It asserts no speed:
// make bench measures (see BENCHMARKS.md).
func TestAgentsBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds agentrelay, benchapi and nats-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := t.TempDir()
	goCmd := cmp.Or(os.Getenv("GO"), "go")
	for name, pkg := range map[string]string{
		"agentrelay":  "github.com/agentrelay/agentrelay/cmd/agentrelay",
		"benchapi":    "github.com/agentrelay/agentrelay/internal/bench/cmd/benchapi",
		"nats-server": "github.com/nats-io/nats-server/v2",
	} {
		if out, err := exec.CommandContext(ctx, goCmd, "build", "-o", filepath.Join(bin, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	var progress bytes.Buffer
	res, err := bench.RunParity(ctx, bench.ParityOptions{
		BinDir: bin,
		Rounds: 1,
		Events: 3000, // 3 per agent: the 409 agent's first is called, the other two wait
		Parts:  []string{bench.PartAgents},
		Log:    &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 0 || len(res.Idle) != 0 || len(res.Agents) != 2 {
		t.Fatalf("%d side-by-side runs, %d idle, %d agents runs; want only the agents part's 2", len(res.Runs), len(res.Idle), len(res.Agents))
	}
	sc := bench.AgentsScenarios()[0]
	for _, r := range res.Agents {
		if r.Counted != 2997 || r.Rate <= 0 || r.Lost != 0 || r.Resent != 0 || r.DupSettles != 0 || r.Terms != 0 {
			t.Errorf("%s: counted %d (want 2997), %.0f/s, %d lost, %d re-sent, %d settled twice, %d dead-lettered; want none",
				r.System, r.Counted, r.Rate, r.Lost, r.Resent, r.DupSettles, r.Terms)
		}
		if r.System != bench.AgentsMany {
			continue
		}
		if r.ConflictCalls < 1 || r.ConflictCalls > r.ProbeBound {
			t.Errorf("%s was called %d times in %.1f s after its first 409, want at least 1 and at most its probes' bound %d",
				sc.Conflicting[0], r.ConflictCalls, r.ConflictWindow, r.ProbeBound)
		}
		if r.SettledBeyond != 0 {
			t.Errorf("%d of the 409 agent's events were settled, want none: they wait for the agent", r.SettledBeyond)
		}
	}
	var md bytes.Buffer
	bench.WriteParity(&md, res, 0)
	t.Logf("report:\n%s", md.String())
	if !strings.Contains(md.String(), "### Issue 20's many-agents target") || strings.Contains(md.String(), "Issue 21") {
		t.Errorf("report without the many-agents part alone:\n%s", md.String())
	}
}
