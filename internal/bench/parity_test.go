package bench

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// Symbols are charged to the module that defines them, whatever their
// decoration: methods, type and itab symbols, generic instantiations
// naming other packages, and paths with an escaped dot.
func TestSymbolsAreChargedToTheirModule(t *testing.T) {
	mods := []string{"github.com/agentrelay/agentrelay", "github.com/nats-io/nats.go", "google.golang.org/protobuf", "go.opentelemetry.io/otel", "go.opentelemetry.io/otel/sdk"}
	for sym, want := range map[string]string{
		"github.com/nats-io/nats%2ego.(*Conn).processMsg":                          "github.com/nats-io/nats.go",
		"github.com/nats-io/nats.go/jetstream.(*pullConsumer).Consume.func1":       "github.com/nats-io/nats.go",
		"go:itab.*github.com/nats-io/nats.go/jetstream.jetStream,github.com/x/y.I": "github.com/nats-io/nats.go",
		"type:.eq.[10]go.opentelemetry.io/otel/attribute.KeyValue":                 "go.opentelemetry.io/otel",
		"sync/atomic.(*Pointer[go.opentelemetry.io/otel/sdk/trace.x]).Load":        "std (Go runtime and standard library)",
		"go.opentelemetry.io/otel/sdk/trace.(*batchSpanProcessor).processQueue":    "go.opentelemetry.io/otel/sdk",
		"go.opentelemetry.io/otel/attribute.computeDistinct":                       "go.opentelemetry.io/otel",
		"github.com/agentrelay/agentrelay/internal/otlphttp.appendSpan":            "github.com/agentrelay/agentrelay",
		"google.golang.org/protobuf/internal/impl.(*MessageInfo).init":             "google.golang.org/protobuf",
		"runtime.mallocgc":            "std (Go runtime and standard library)",
		"github.com/unknown/module.F": ModUnknown,
	} {
		got := ModTables
		if p := symbolPackage(sym); p != "" {
			got = moduleOf(mods, p)
		}
		if got != want {
			t.Errorf("%s: charged to %q, want %q (package %q)", sym, got, want, symbolPackage(sym))
		}
	}
	if p := symbolPackage("go:func.*"); p != "" {
		t.Errorf("go:func.* is the runtime's table, not package %q", p)
	}
}

func TestParseInitTrace(t *testing.T) {
	in := "init internal/bytealg @0.079 ms, 0 ms clock, 0 bytes, 0 allocs\n" +
		"something else\n" +
		"init github.com/prometheus/procfs @53 ms, 0.69 ms clock, 96536 bytes, 892 allocs\n"
	got := ParseInitTrace(in)
	if len(got) != 2 || got[1] != (Init{Package: "github.com/prometheus/procfs", Ms: 0.69, Bytes: 96536, Allocs: 892}) {
		t.Errorf("got %+v", got)
	}
}

// A heap record is charged to the innermost frame outside the standard
// library: the code that asked for the memory.
func TestHeapRecordsAreChargedToTheirCaller(t *testing.T) {
	profile := `heap profile: 3: 8192 [10: 20480] @ heap/1048576
1: 4096 [5: 20480] @ 0x1 0x2 0x3
#	0x44d9ab	bufio.NewReaderSize+0x4b	/go/src/bufio/bufio.go:57
#	0x6a1b2c	net/http.(*Transport).dialConn+0x8c	/go/src/net/http/transport.go:1770
#	0x8da847	github.com/agentrelay/agentrelay/agentapi.(*Agent).Trigger+0x127	agentapi/client.go:255

2: 4096 [5: 0] @ 0x4
#	0x41a1a1	runtime.malg+0x21	/go/src/runtime/proc.go:4900

# runtime.MemStats
# Alloc = 1
`
	recs, err := ParseHeapProfile(strings.NewReader(profile))
	if err != nil || len(recs) != 2 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	if fn, line := recs[0].Owner(); fn != "github.com/agentrelay/agentrelay/agentapi.(*Agent).Trigger" || line != "agentapi/client.go:255" {
		t.Errorf("owner %s %s", fn, line)
	}
	by := HeapByModule(recs, []string{"github.com/agentrelay/agentrelay"})
	if by["github.com/agentrelay/agentrelay"] != 4096 || by[ModStd] != 4096 {
		t.Errorf("by module %v", by)
	}
	sites := heapSites(recs)
	if len(sites) != 2 || sites[0].Alloc == "" && sites[1].Alloc == "" {
		t.Errorf("sites %+v: want the allocating frame kept beside the owner", sites)
	}
}

// Ratios are taken within a round, then the median: a slow round slows
// every system in it.
func TestSummarizeParityTakesRatiosWithinARound(t *testing.T) {
	sc := ParityScenarios()[0].Name
	var runs []ParityRun
	for round, f := range []float64{1, 0.5, 1.1} { // round 2 ran on a busy machine
		runs = append(runs,
			ParityRun{Scenario: sc, System: SysCeiling, Round: round, Events: 1000, Rate: 5000 * f},
			ParityRun{Scenario: sc, System: SysBare, Round: round, Events: 1000, Rate: 4500 * f, CPU: 1, PeakRSS: 20 << 20},
			ParityRun{Scenario: sc, System: SysRelay, Round: round, Events: 1000, Rate: 4950 * f, CPU: 1.02, PeakRSS: 23 << 20, Calls: 1001, Keys: 1000},
		)
	}
	var relay ParitySummary
	for _, s := range SummarizeParity(runs) {
		if s.System == SysRelay {
			relay = s
		}
	}
	if relay.Runs != 3 || relay.VsBare < 1.0999 || relay.VsBare > 1.1001 || relay.VsCeiling < 0.9899 || relay.VsCeiling > 0.9901 {
		t.Errorf("summary %+v: want 1.10× the bare loop and 99 %% of the ceiling in every round", relay)
	}
	if relay.RSSOverBare != 3<<20 || relay.Resent != 3 {
		t.Errorf("RSS over bare %v, resent %d", relay.RSSOverBare, relay.Resent)
	}
	targets := ParityTargets(SummarizeParity(runs), []IdleRun{{System: SysRelay, RSS: 13 << 20}}, 13_500_000)
	met := map[string]bool{}
	for _, tg := range targets {
		met[tg.What+" "+tg.Want] = tg.Met
	}
	for what, want := range map[string]bool{
		sc + ": peak RSS ≤ bare loop + 4 MiB":              true,
		sc + ": events/s ≥ 97 % of the plain-HTTP ceiling": true,
		sc + ": CPU per event ≤ 1.05× bare loop":           true,
		"idle RSS 3 s after start ≤ 12 MiB":                false,
		"release binary (make build) ≤ 25 MB":              true,
	} {
		if got, ok := met[what]; !ok || got != want {
			t.Errorf("target %q: met=%v (listed %v), want met=%v", what, got, ok, want)
		}
	}
}

// A process's CPU and memory are read from /proc as the bench reads them.
func TestProcReadings(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc")
	}
	pid := os.Getpid()
	if rss := procStatusOf(pid, "VmRSS"); rss < 1<<20 {
		t.Errorf("VmRSS %d bytes", rss)
	}
	deadline := 0
	for procCPU(pid) == 0 && deadline < 1e8 { // spin until a tick of CPU shows
		deadline++
	}
	if procCPU(pid) <= 0 {
		t.Error("no CPU time read")
	}
}
