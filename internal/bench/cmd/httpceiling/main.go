// Command httpceiling measures how fast -c concurrent callers complete -n
// calls over loopback HTTP with a plain http.Client, with no NATS at all:
// the most any worker can reach against the same API on this machine (see
// BENCHMARKS.md). `make bench` runs it against its API process (-url) in
// the same rounds as the workers, and reports each worker as a share of
// it. Without -url it serves the API emulator itself at -latency, as it
// did for bench (b): 15,360 calls, 256 at a time, 50 ms.
//
// With -json it prints one line: {"calls":n,"seconds":s,"rate":r}.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
)

func main() {
	base := flag.String("url", "", "API base URL (default: serve the emulator here)")
	calls := flag.Int("n", 15360, "calls")
	inFlight := flag.Int("c", 256, "callers at once")
	latency := flag.Duration("latency", 50*time.Millisecond, "the emulator's latency (without -url)")
	asJSON := flag.Bool("json", false, "print the result as one JSON line")
	flag.Parse()
	if err := run(*base, *calls, *inFlight, *latency, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "httpceiling:", err)
		os.Exit(1)
	}
}

func run(base string, calls, inFlight int, latency time.Duration, asJSON bool) error {
	own := base == ""
	if own {
		emu := emulator.New(emulator.WithToken("t", "agtch_x"), emulator.WithTrigger("agtch_x", true),
			emulator.WithFaults(emulator.Faults{Latency: latency}))
		srv, err := emu.Listen("127.0.0.1:0")
		if err != nil {
			return err
		}
		defer srv.Close()
		base = srv.URL
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * inFlight}}
	url := base + "/v1/workspace_agents/agtch_x/trigger"

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(calls) && ctx.Err() == nil; i = next.Add(1) {
				if err := call(ctx, client, url, strconv.FormatInt(i, 10)); err != nil {
					cancel(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	d := time.Since(t0)
	rate := float64(calls) / d.Seconds()
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]float64{"calls": float64(calls), "seconds": d.Seconds(), "rate": rate})
	}
	if !own || latency <= 0 {
		fmt.Printf("%d calls, %d at a time, in %v: %.0f/s\n", calls, inFlight, d.Round(time.Millisecond), rate)
		return nil
	}
	ideal := float64(inFlight) / latency.Seconds()
	fmt.Printf("%d calls of %v, %d at a time, in %v: %.0f/s, %.1f %% of the ideal %.0f/s\n",
		calls, latency, inFlight, d.Round(time.Millisecond), rate, 100*rate/ideal, ideal)
	return nil
}

func call(ctx context.Context, client *http.Client, url, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(`{"input":"x"}`)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer t")
	req.Header.Set("Content-Type", "application/json")
	req.Header["idempotency-key"] = []string{"k-" + key}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("call %s: %s", key, resp.Status)
	}
	return nil
}
