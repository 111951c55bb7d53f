// Package heapdump writes a process's heap profile and memory figures when
// it receives SIGUSR1: the profiling builds of the bench's workers
// (cmd/relayprof, cmd/bareloop with -tags benchprof) use it, so that the
// bench can take a profile at idle or under load from outside. It imports
// only the standard library: it must add nothing to the bare loop but
// itself.
package heapdump

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"
)

// Figures are what Listen writes beside each profile.
type Figures struct {
	LiveHeap   uint64 `json:"live_heap"`   // after a forced GC
	HeapInUse  uint64 `json:"heap_in_use"` // heap objects, bytes
	Stacks     uint64 `json:"stacks"`
	Goroutines uint64 `json:"goroutines"`
}

// Listen starts writing, on every SIGUSR1, dir/heap-N.txt (a heap profile,
// debug=1, after a GC), dir/goroutines-N.txt (goroutines by stack) and
// dir/figures-N.json, N counting from 1. dir
// empty: nothing. The set-up allocates nothing until the signal comes.
func Listen(dir string) {
	if dir == "" {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	go func() {
		for n := 1; ; n++ {
			<-ch
			if err := write(dir, n); err != nil {
				fmt.Fprintln(os.Stderr, "heapdump:", err)
			}
		}
	}()
}

func write(dir string, n int) error {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"}, {Name: "/sched/goroutines:goroutines"}}
	metrics.Read(s)
	fig := Figures{s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64(), s[3].Value.Uint64()}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("heap-%d.txt", n)))
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 1); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	g, err := os.Create(filepath.Join(dir, fmt.Sprintf("goroutines-%d.txt", n)))
	if err != nil {
		return err
	}
	if err := pprof.Lookup("goroutine").WriteTo(g, 1); err != nil {
		_ = g.Close()
		return err
	}
	if err := g.Close(); err != nil {
		return err
	}
	b, err := json.Marshal(fig)
	if err != nil {
		return err
	}
	// Written last: its presence says both files are complete.
	tmp := filepath.Join(dir, fmt.Sprintf(".figures-%d.json", n))
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("figures-%d.json", n)))
}
