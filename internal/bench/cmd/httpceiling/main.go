// Command httpceiling measures how fast 256 concurrent callers complete
// 50 ms calls against the API emulator over loopback HTTP, with no NATS at
// all: the most any worker can reach in bench (b) on this machine (see
// BENCHMARKS.md). It uses the figures of scenario (b) at -scale 0.5:
// 15,360 calls, 256 at a time, 50 ms of API latency.
package main

import (
	"bytes"
	"context"
	"errors"
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

const (
	calls    = 15360
	inFlight = 256
	latency  = 50 * time.Millisecond
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "httpceiling:", err)
		os.Exit(1)
	}
}

func run() error {
	emu := emulator.New(emulator.WithToken("t", "agtch_x"), emulator.WithTrigger("agtch_x", true),
		emulator.WithFaults(emulator.Faults{Latency: latency}))
	srv, err := emu.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * inFlight}}
	url := srv.URL + "/v1/workspace_agents/agtch_x/trigger"

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= calls && ctx.Err() == nil; i = next.Add(1) {
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
	ideal := float64(inFlight) / latency.Seconds()
	rate := calls / d.Seconds()
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
