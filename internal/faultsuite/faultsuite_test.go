package faultsuite

import (
	"hash/fnv"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
)

// The steady API faults of every profile: a mix of 5xx, 429 with
// Retry-After, hangs past the client timeout and answers dropped after the
// event was accepted, on top of some latency.
func apiFaults(scale float64) emulator.Faults {
	return emulator.Faults{
		Latency:         5 * time.Millisecond,
		LatencyJitter:   25 * time.Millisecond,
		ServerErrorRate: 0.05 * scale,
		RateLimitRate:   0.03 * scale,
		RetryAfter:      "1",
		HangRate:        0.01 * scale,
		DropRate:        0.04 * scale,
	}
}

// The short profiles run in `make test` (with -race, workers included):
// seconds of traffic, every kind of fault at least once.
func shortProfiles() []profile {
	return []profile{
		{
			name: "single-server", events: 320, paused: 16, workers: 3, publishFor: 8 * time.Second,
			apiFaults: apiFaults(1), replyDelay: 60 * time.Millisecond,
			killEvery: [2]time.Duration{1200 * time.Millisecond, 2 * time.Second}, downFor: [2]time.Duration{200 * time.Millisecond, 600 * time.Millisecond},
			restarts: 1, downtime: time.Second,
			outages: 1, outageFor: 2 * time.Second,
			rotations: 1, window401: 500 * time.Millisecond,
			runnableAt: 0.75, maxBackoff: 400 * time.Millisecond, drainTimeout: 45 * time.Second,
		},
		{
			name: "cluster-failover", events: 200, paused: 10, workers: 2, publishFor: 6 * time.Second, cluster: true,
			apiFaults: apiFaults(0.5), replyDelay: 60 * time.Millisecond,
			killEvery: [2]time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond}, downFor: [2]time.Duration{200 * time.Millisecond, 500 * time.Millisecond},
			leaderKill: 2, downtime: 2 * time.Second,
			runnableAt: 0.7, maxBackoff: 400 * time.Millisecond, drainTimeout: 60 * time.Second,
		},
	}
}

// The long profiles run with `make chaos`: tens of thousands of events and
// hundreds of faults.
func longProfiles() []profile {
	return []profile{
		{
			name: "chaos-single-server", events: 24000, paused: 300, workers: 4, publishFor: 4 * time.Minute,
			apiFaults: apiFaults(1), replyDelay: 60 * time.Millisecond,
			killEvery: [2]time.Duration{time.Second, 3 * time.Second}, downFor: [2]time.Duration{200 * time.Millisecond, 1500 * time.Millisecond},
			restarts: 6, downtime: 2 * time.Second,
			outages: 5, outageFor: 3 * time.Second,
			rotations: 4, window401: time.Second,
			runnableAt: 0.5, maxBackoff: 2 * time.Second, drainTimeout: 5 * time.Minute,
		},
		{
			name: "chaos-cluster-failover", events: 12000, paused: 150, workers: 3, publishFor: 3 * time.Minute, cluster: true,
			apiFaults: apiFaults(1), replyDelay: 60 * time.Millisecond,
			killEvery: [2]time.Duration{time.Second, 3 * time.Second}, downFor: [2]time.Duration{200 * time.Millisecond, 1500 * time.Millisecond},
			leaderKill: 8, downtime: 4 * time.Second,
			outages: 2, outageFor: 3 * time.Second,
			rotations: 2, window401: time.Second,
			runnableAt: 0.5, maxBackoff: 2 * time.Second, drainTimeout: 5 * time.Minute,
		},
	}
}

// baseSeed is AGENTRELAY_FAULT_SEED, or a fresh one. Each profile derives
// its own seed from it and its name, so one variable replays a whole run.
func baseSeed(t *testing.T) uint64 {
	if s := os.Getenv("AGENTRELAY_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("AGENTRELAY_FAULT_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

func profileSeed(base uint64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return base ^ h.Sum64()
}

// TestFaultSuite runs the short profiles: real worker processes killed and
// restarted mid-call, the broker restarted, a cluster's stream leaders
// killed, the API failing in every way it can, an outage that opens the
// breakers, a token rotated with a window of 401s, and a producer's known
// mix of good, poison, forbidden, unknown and not-yet-runnable events. Not
// one event may be lost or accepted twice.
func TestFaultSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs worker processes for a minute; skipped with -short")
	}
	base := baseSeed(t)
	t.Logf("AGENTRELAY_FAULT_SEED=%d", base)
	for _, p := range shortProfiles() {
		t.Run(p.name, func(t *testing.T) { runProfile(t, p, base) })
	}
}

// TestChaos runs the long profiles; `make chaos` sets AGENTRELAY_CHAOS=1.
func TestChaos(t *testing.T) {
	if os.Getenv("AGENTRELAY_CHAOS") == "" {
		t.Skip("set AGENTRELAY_CHAOS=1 (make chaos) for the long fault suite")
	}
	base := baseSeed(t)
	t.Logf("AGENTRELAY_FAULT_SEED=%d", base)
	for _, p := range longProfiles() {
		t.Run(p.name, func(t *testing.T) { runProfile(t, p, base) })
	}
}
