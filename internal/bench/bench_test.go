package bench_test

import (
	"bytes"
	"context"
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
