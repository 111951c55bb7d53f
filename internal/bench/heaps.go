package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agentrelay/agentrelay/internal/bench/heapdump"
)

// HeapRun is a heap profile of a worker's profiling build, at idle or
// under load.
type HeapRun struct {
	System string           `json:"system"`
	Phase  string           `json:"phase"` // "idle" or "load"
	Fig    heapdump.Figures `json:"figures"`
	// InFlight is the number of calls the API held when the profile was
	// taken (under load), and AckPending the consumer's delivered but
	// unsettled messages: what the worker held.
	InFlight   int `json:"in_flight"`
	AckPending int `json:"ack_pending"`
	// Slots is the worker's in-flight limit: per-message figures are
	// divided by it, since connections and slots are sized by it.
	Slots int `json:"slots"`
	// Sites are the profile's records by owner (see HeapRecord.Owner),
	// biggest first.
	Sites []HeapSite `json:"sites"`
	// ByModule is the in-use heap by the owner's module.
	ByModule map[string]int64 `json:"by_module"`
}

// HeapSite is the heap one call site holds.
type HeapSite struct {
	Func    string `json:"func"`
	Line    string `json:"line"` // file:line of the owner's call
	Bytes   int64  `json:"bytes"`
	Objects int64  `json:"objects"`
	// Alloc is the innermost frame: what allocated (make, bufio.NewReader,
	// context.WithTimeout...), when not the owner itself.
	Alloc string `json:"alloc,omitempty"`
}

// Memory profile rates of the profiling runs: every allocation at idle; one
// per 512 bytes on average under load (pprof scales the samples up), so
// that small per-message objects (a context, a timer) are counted, while
// the worker keeps its calls in flight (recording every allocation there
// slows it down until it does not).
const (
	idleProfileRate = 1
	loadProfileRate = 512
)

// profile runs each worker's profiling build twice in sc: idle (3 s after
// start, nothing to do) and under load (a third of the events settled),
// and takes a heap profile each time.
func (e *parityEnv) profile(ctx context.Context, sc ParityScenario) ([]HeapRun, error) {
	dir := e.o.ProfileDir
	if dir == "" {
		dir = filepath.Join(e.o.BinDir, "..", "profiles")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []HeapRun
	for _, sys := range []string{SysBare, SysRelay} {
		for _, phase := range []string{"idle", "load"} {
			h, err := e.profileOnce(ctx, sc, sys, phase, dir)
			if err != nil {
				return out, fmt.Errorf("%s, %s: %w", sys, phase, err)
			}
			e.logf("profile %-10s %-4s live heap %6.2f MiB  stacks %5.2f MiB  goroutines %d  calls at the API %d  ack pending %d",
				sys, phase, mibf(h.Fig.LiveHeap), mibf(h.Fig.Stacks), h.Fig.Goroutines, h.InFlight, h.AckPending)
			out = append(out, h)
		}
	}
	return out, nil
}

// profileOnce takes one heap profile of sys's profiling build in phase:
// it starts the worker against a clean API and stream, waits for the phase's
// moment, has the worker dump its heap (SIGUSR1), keeps the profile in dir
// and attributes it to call sites and modules.
func (e *parityEnv) profileOnce(ctx context.Context, sc ParityScenario, sys, phase, dir string) (HeapRun, error) {
	h := HeapRun{System: sys, Phase: phase}
	n := 0
	if phase == "load" {
		n = e.o.Events
	}
	api := e.apis[apiKey(sc.Latency)]
	if err := e.apiReset(api); err != nil {
		return h, err
	}
	if err := e.resetStream(ctx, n); err != nil {
		return h, err
	}
	cmd, durable, err := e.workerCmd(sys, sc, true)
	if err != nil {
		return h, err
	}
	pdir, err := os.MkdirTemp(e.dir, "prof-")
	if err != nil {
		return h, err
	}
	rate := idleProfileRate
	if phase == "load" {
		rate = loadProfileRate
	}
	cmd.Env = append(os.Environ(), "RELAYPROF_DIR="+pdir, fmt.Sprintf("GODEBUG=memprofilerate=%d", rate))
	lf, err := e.logFile(fmt.Sprintf("prof-%s-%s", strings.ReplaceAll(sys, " ", ""), phase))
	if err != nil {
		return h, err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return h, err
	}
	defer func() { _ = stopProc(cmd) }()
	if err := e.awaitProfilePoint(ctx, phase, durable, n); err != nil {
		return h, err
	}
	if phase == "load" {
		e.recordHeld(ctx, &h, sc, api, durable)
	}
	if h.Fig, err = dumpHeap(cmd, pdir); err != nil {
		return h, err
	}
	recs, err := keepHeapProfile(pdir, dir, sys, phase)
	if err != nil {
		return h, err
	}
	name := "agentrelay"
	if sys == SysBare {
		name = "bareloop"
	}
	mods, err := Modules(e.bin(name))
	if err != nil {
		return h, err
	}
	h.ByModule = HeapByModule(recs, mods)
	h.Sites = heapSites(recs)
	return h, nil
}

// awaitProfilePoint waits for the moment the phase is profiled at: idle,
// e.o.IdleAfter after the start; under load, when a third of the n events
// are settled.
func (e *parityEnv) awaitProfilePoint(ctx context.Context, phase, durable string, n int) error {
	if phase == "idle" {
		select {
		case <-time.After(e.o.IdleAfter):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return e.waitSettled(ctx, durable, uint64(n/3), 120*time.Second)
}

// recordHeld notes in h what the worker held under load when the profile was
// taken: its slots, the calls the API held and the consumer's unacked
// messages. A figure that cannot be read stays zero; the profile still counts.
func (e *parityEnv) recordHeld(ctx context.Context, h *HeapRun, sc ParityScenario, api, durable string) {
	h.Slots = sc.InFlight
	if s, err := e.apiStats(api); err == nil {
		h.InFlight = s.InUse
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if c, err := e.js.Consumer(qctx, parityStream, durable); err == nil {
		h.AckPending = c.CachedInfo().NumAckPending
	}
	cancel()
}

// dumpHeap asks the profiling build to write its heap profile (SIGUSR1) and
// reads the figures it writes with it into pdir.
func dumpHeap(cmd *exec.Cmd, pdir string) (heapdump.Figures, error) {
	var fig heapdump.Figures
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return fig, err
	}
	figPath := filepath.Join(pdir, "figures-1.json")
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(figPath)
		if err == nil {
			return fig, json.Unmarshal(b, &fig)
		}
		if time.Now().After(deadline) {
			return fig, errors.New("no heap profile within 30s of SIGUSR1")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// keepHeapProfile moves the heap profile and goroutine dump from pdir into
// dir, named by system and phase, and parses the heap profile.
func keepHeapProfile(pdir, dir, sys, phase string) ([]HeapRecord, error) {
	keep := filepath.Join(dir, fmt.Sprintf("%s-%s.heap.txt", strings.ReplaceAll(sys, " ", ""), phase))
	if err := os.Rename(filepath.Join(pdir, "heap-1.txt"), keep); err != nil {
		return nil, err
	}
	_ = os.Rename(filepath.Join(pdir, "goroutines-1.txt"), filepath.Join(dir, fmt.Sprintf("%s-%s.goroutines.txt", strings.ReplaceAll(sys, " ", ""), phase)))
	f, err := os.Open(keep)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseHeapProfile(f)
}

// heapSites sums records by owner call site, biggest first.
func heapSites(recs []HeapRecord) []HeapSite {
	by := map[string]*HeapSite{}
	for _, r := range recs {
		if r.InUseBytes == 0 {
			continue
		}
		fn, line := r.Owner()
		alloc := ""
		if len(r.Frames) > 0 && r.Frames[0] != fn {
			alloc = r.Frames[0]
		}
		k := fn + " " + line + " " + alloc
		if by[k] == nil {
			by[k] = &HeapSite{Func: fn, Line: line, Alloc: alloc}
		}
		by[k].Bytes += r.InUseBytes
		by[k].Objects += r.InUseObjects
	}
	var out []HeapSite
	for _, s := range by {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b HeapSite) int { return int(b.Bytes - a.Bytes) })
	return out
}

// waitSettled waits until the consumer's ack floor reaches n.
func (e *parityEnv) waitSettled(ctx context.Context, durable string, n uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := e.js.Consumer(qctx, parityStream, durable)
		cancel()
		if err == nil && c.CachedInfo().AckFloor.Stream >= n {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("consumer %s did not settle %d within %v", durable, n, timeout)
}

// WriteHeaps writes the profiles' comparison in Markdown: a summary table,
// then per system the sites that grow under load, the top idle sites and the
// idle heap by module.
func WriteHeaps(w io.Writer, hs []HeapRun) {
	runs := heapRuns(hs)
	writeHeapSummary(w, runs)
	writeGrowthBySite(w, runs)
	writeTopSites(w, runs)
	writeIdleByModule(w, runs)
}

// heapRuns are the profiles WriteHeaps compares.
type heapRuns []HeapRun

// get returns the profile of sys in phase.
func (hs heapRuns) get(sys, phase string) (HeapRun, bool) {
	for _, h := range hs {
		if h.System == sys && h.Phase == phase {
			return h, true
		}
	}
	return HeapRun{}, false
}

// writeHeapSummary writes one row per system that has both profiles: the
// live heap idle and under load, and the heap and stacks per in-flight slot.
func writeHeapSummary(w io.Writer, runs heapRuns) {
	fmt.Fprintln(w, "### Heap at idle and per message in flight (profiling builds, 50 ms scenario, 256 in flight, profile when a third of the events are settled)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| system | live heap idle | live heap under load | calls at the API / unacked | heap per in-flight slot (load − idle) ÷ 256 | goroutines idle → load | stacks per slot |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, sys := range []string{SysBare, SysRelay} {
		idle, ok1 := runs.get(sys, "idle")
		load, ok2 := runs.get(sys, "load")
		if !ok1 || !ok2 {
			continue
		}
		per, stk := 0.0, 0.0
		if load.Slots > 0 {
			per = (float64(load.Fig.LiveHeap) - float64(idle.Fig.LiveHeap)) / float64(load.Slots)
			stk = (float64(load.Fig.Stacks) - float64(idle.Fig.Stacks)) / float64(load.Slots)
		}
		fmt.Fprintf(w, "| %s | %.2f MiB | %.2f MiB | %d / %d | %.1f KiB | %d → %d | %.1f KiB |\n", sys,
			mibf(idle.Fig.LiveHeap), mibf(load.Fig.LiveHeap), load.InFlight, load.AckPending, per/1024, idle.Fig.Goroutines, load.Fig.Goroutines, stk/1024)
	}
	fmt.Fprintln(w)
}

// writeGrowthBySite writes, per system, the 15 sites whose heap grows most
// from idle to load, per in-flight slot.
func writeGrowthBySite(w io.Writer, runs heapRuns) {
	for _, sys := range []string{SysBare, SysRelay} {
		idle, ok1 := runs.get(sys, "idle")
		load, ok2 := runs.get(sys, "load")
		if !ok1 || !ok2 || load.Slots == 0 {
			continue
		}
		grown := grownSites(idle.Sites, load.Sites)
		fmt.Fprintf(w, "%s: heap held under load per in-flight slot ((load − idle) ÷ %d), top 15 sites\n\n", sys, load.Slots)
		fmt.Fprintln(w, "| site | allocated by | bytes per message | objects per message |")
		fmt.Fprintln(w, "|---|---|---:|---:|")
		for i, s := range grown {
			if i == 15 {
				break
			}
			fmt.Fprintf(w, "| `%s` %s | `%s` | %.0f | %.2f |\n", s.Func, shortLine(s.Line), s.Alloc,
				float64(s.Bytes)/float64(load.Slots), float64(s.Objects)/float64(load.Slots))
		}
		fmt.Fprintln(w)
	}
}

// grownSites returns the sites that hold more under load than at idle, by
// how much, biggest first. Sites are matched by owner and allocator.
func grownSites(idle, load []HeapSite) []HeapSite {
	type key struct{ fn, alloc string }
	before := map[key]HeapSite{}
	for _, s := range idle {
		k := key{s.Func + " " + s.Line, s.Alloc}
		b := before[k]
		b.Bytes += s.Bytes
		b.Objects += s.Objects
		before[k] = b
	}
	var grown []HeapSite
	for _, s := range load {
		b := before[key{s.Func + " " + s.Line, s.Alloc}]
		if d := s.Bytes - b.Bytes; d > 0 {
			g := s
			g.Bytes, g.Objects = d, s.Objects-b.Objects
			grown = append(grown, g)
		}
	}
	slices.SortFunc(grown, func(a, b HeapSite) int { return int(b.Bytes - a.Bytes) })
	return grown
}

// writeTopSites writes, per system, the 12 idle sites holding the most heap.
func writeTopSites(w io.Writer, runs heapRuns) {
	for _, phase := range []string{"idle"} {
		for _, sys := range []string{SysBare, SysRelay} {
			h, ok := runs.get(sys, phase)
			if !ok {
				continue
			}
			fmt.Fprintf(w, "%s, %s: in-use heap by owner (the innermost frame outside the standard library), top 12 of %d sites\n\n", sys, phase, len(h.Sites))
			fmt.Fprintln(w, "| site | allocated by | in use | objects |")
			fmt.Fprintln(w, "|---|---|---:|---:|")
			for i, s := range h.Sites {
				if i == 12 {
					break
				}
				fmt.Fprintf(w, "| `%s` %s | `%s` | %.1f KiB | %d |\n", s.Func, shortLine(s.Line), s.Alloc, float64(s.Bytes)/1024, s.Objects)
			}
			fmt.Fprintln(w)
		}
	}
}

// writeIdleByModule writes the idle heap of both systems by the owner's
// module, agentrelay's biggest first.
func writeIdleByModule(w io.Writer, runs heapRuns) {
	fmt.Fprintln(w, "Idle heap by module (owner's module):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| module | bare loop | agentrelay |")
	fmt.Fprintln(w, "|---|---:|---:|")
	bi, _ := runs.get(SysBare, "idle")
	ri, _ := runs.get(SysRelay, "idle")
	var mods []string
	for m := range ri.ByModule {
		mods = append(mods, m)
	}
	for m := range bi.ByModule {
		if !slices.Contains(mods, m) {
			mods = append(mods, m)
		}
	}
	slices.SortFunc(mods, func(a, b string) int { return int(ri.ByModule[b] - ri.ByModule[a]) })
	for _, m := range mods {
		fmt.Fprintf(w, "| %s | %.1f KiB | %.1f KiB |\n", m, float64(bi.ByModule[m])/1024, float64(ri.ByModule[m])/1024)
	}
	fmt.Fprintln(w)
}

// shortLine keeps the last two path elements of file:line.
func shortLine(l string) string {
	parts := strings.Split(l, "/")
	if len(parts) > 2 {
		return strings.Join(parts[len(parts)-2:], "/")
	}
	return l
}
