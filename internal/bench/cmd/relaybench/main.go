// Command relaybench measures agentrelay against a bare nats.go reference
// loop: see package bench. "relaybench" runs the suite and prints Markdown
// tables; "relaybench worker" is the child process it starts for each
// worker.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"

	"github.com/agentrelay/agentrelay/internal/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		fs := flag.NewFlagSet("worker", flag.ExitOnError)
		raw := fs.String("config", "", "worker configuration (JSON)")
		_ = fs.Parse(os.Args[2:])
		var cfg bench.WorkerConfig
		if err := json.Unmarshal([]byte(*raw), &cfg); err != nil {
			fmt.Fprintln(os.Stderr, "relaybench worker:", err)
			os.Exit(2)
		}
		if err := bench.RunWorker(cfg, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "relaybench worker:", err)
			os.Exit(1)
		}
		return
	}

	var (
		scenarios = flag.String("scenarios", "", "comma-separated scenario names (default all: a,b-backlog,b-live,b-live80,b-ordered,c,b250,c250,d,e,soak)")
		systems   = flag.String("systems", "", "comma-separated systems (reference,agentrelay; default each scenario's own)")
		reps      = flag.Int("reps", 5, "repetitions of each measurement (the median is reported)")
		scale     = flag.Float64("scale", 1, "multiply every scenario's event count")
		soak      = flag.Duration("soak", 60*time.Second, "duration of the soak")
		profile   = flag.String("profile", "", "directory for CPU and allocation profiles of each worker (first repetition)")
		jsonOut   = flag.String("json", "", "also write every run's raw result to this file")
		quiet     = flag.Bool("q", false, "no progress lines")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	o := bench.Options{Reps: *reps, Scale: *scale, Soak: *soak, ProfileDir: *profile, Log: os.Stderr}
	if *quiet {
		o.Log = nil
	}
	if *scenarios != "" {
		o.Scenarios = strings.Split(*scenarios, ",")
	}
	if *systems != "" {
		for _, s := range strings.Split(*systems, ",") {
			o.Systems = append(o.Systems, bench.System(s))
		}
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	start := time.Now()
	load0 := loadAvg()
	results, err := bench.Run(ctx, o)
	if *jsonOut != "" {
		if b, e := json.MarshalIndent(results, "", " "); e == nil {
			_ = os.WriteFile(*jsonOut, b, 0o644)
		}
	}
	fmt.Printf("relaybench: %s, %d CPUs (GOMAXPROCS %d), %s, %d repetitions (median), took %s; load average at start %s, at end %s\n\n",
		time.Now().Format("2006-01-02"), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), *reps, time.Since(start).Round(time.Second),
		load0, loadAvg())
	bench.WriteMarkdown(os.Stdout, bench.Summarize(results))
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

// loadAvg is the 1-minute load average: on a shared machine it says how
// much else was running.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
