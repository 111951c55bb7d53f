// Command relaybench measures agentrelay against a bare nats.go loop: see
// package bench.
//
//	relaybench parity -bin DIR   the side-by-side of issue 21 and the many
//	                             agents of issue 20 (make bench): every
//	                             part a process of its own
//	relaybench weight BINARY     what each module costs a binary
//	relaybench                   the scenario suite (make bench-suite)
//	relaybench worker            the suite's child process for one worker
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
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
	if len(os.Args) > 1 && os.Args[1] == "parity" {
		os.Exit(parity(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "weight" {
		os.Exit(weight(os.Args[2:]))
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

// parity runs the side-by-side bench and prints its tables, then the
// release binary's weight.
func parity(args []string) int {
	fs := flag.NewFlagSet("parity", flag.ExitOnError)
	bin := fs.String("bin", "bench-results/bin", "folder of the programs (see bench.mk)")
	rounds := fs.Int("rounds", 3, "interleaved rounds (medians are reported)")
	events := fs.Int("events", 20000, "events published before each worker starts")
	profile := fs.Bool("profile", false, "also take heap profiles at idle and under load (needs relayprof and bareloop-prof)")
	profileDir := fs.String("profile-dir", "", "where the profiles go (default: beside -bin)")
	jsonOut := fs.String("json", "", "also write every run's raw result to this file")
	parts := fs.String("parts", "", "comma-separated parts to run (default all: "+bench.PartSideBySide+","+bench.PartIdle+","+bench.PartAgents+")")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	load0 := loadAvg()
	o := bench.ParityOptions{BinDir: *bin, Rounds: *rounds, Events: *events,
		Profile: *profile, ProfileDir: *profileDir, Log: os.Stderr}
	if *parts != "" {
		o.Parts = strings.Split(*parts, ",")
	}
	res, err := bench.RunParity(ctx, o)
	if *jsonOut != "" {
		if b, e := json.MarshalIndent(res, "", " "); e == nil {
			_ = os.WriteFile(*jsonOut, b, 0o644)
		}
	}
	fmt.Printf("## relaybench parity: %s, %d CPUs, %s, %d events per run, took %s; load average at start %s, at end %s\n\n",
		time.Now().Format("2006-01-02 15:04"), runtime.NumCPU(), runtime.Version(), *events, time.Since(start).Round(time.Second), load0, loadAvg())
	var size int64
	if fi, e := os.Stat(filepath.Join(*bin, "agentrelay")); e == nil {
		size = fi.Size()
	}
	bench.WriteParity(os.Stdout, res, size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench parity:", err)
		return 1
	}
	if len(res.Runs) == 0 {
		return 0 // the weights go with the side by side
	}
	return weightSideBySide(ctx, *bin)
}

// weightSideBySide prints the bare loop's and agentrelay's weight by module
// and checks that agentrelay links no dev-only code.
func weightSideBySide(ctx context.Context, bin string) int {
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	size := func(name string) int64 {
		fi, err := os.Stat(filepath.Join(bin, name))
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	fmt.Printf("### Weight by module (go tool nm -size; init by GODEBUG=inittrace=1)\n\n")
	bare, err := bench.BinaryWeights(ctx, goCmd, filepath.Join(bin, "bareloop.syms"), "-h")
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench weight:", err)
		return 1
	}
	relay, err := bench.BinaryWeights(ctx, goCmd, filepath.Join(bin, "agentrelay.syms"), "version")
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench weight:", err)
		return 1
	}
	bench.WriteWeightsSideBySide(os.Stdout, "bare loop", bare, size("bareloop"), "agentrelay", relay, size("agentrelay"), 20)
	linked, err := bench.DevOnlyLinked(ctx, goCmd, filepath.Join(bin, "agentrelay.syms"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench weight:", err)
		return 1
	}
	if len(linked) == 0 {
		fmt.Printf("The release build links none of %s.\n", strings.Join(bench.DevOnly, ", "))
	} else {
		fmt.Printf("**The release build links dev-only code:** %s.\n", strings.Join(linked, "; "))
		return 1
	}
	return 0
}

// weight prints what each module costs the binary named (built without -s).
func weight(args []string) int {
	fs := flag.NewFlagSet("weight", flag.ExitOnError)
	stripped := fs.Int64("stripped", 0, "size of the stripped build of the same code, for the share column")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: relaybench weight [-stripped BYTES] BINARY")
		return 2
	}
	return weightReport(context.Background(), fs.Arg(0), *stripped)
}

func weightReport(ctx context.Context, path string, stripped int64) int {
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	fmt.Printf("### Weight of %s by module\n\n", filepath.Base(path))
	ws, err := bench.BinaryWeights(ctx, goCmd, path, "version")
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench weight:", err)
		return 1
	}
	bench.WriteWeights(os.Stdout, ws, stripped, 20)
	linked, err := bench.DevOnlyLinked(ctx, goCmd, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench weight:", err)
		return 1
	}
	if len(linked) == 0 {
		fmt.Printf("Links none of %s.\n", strings.Join(bench.DevOnly, ", "))
	} else {
		fmt.Printf("**Links dev-only code:** %s.\n", strings.Join(linked, "; "))
	}
	return 0
}
