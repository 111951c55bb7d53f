//go:build benchprof

package main

import (
	"os"

	"github.com/agentrelay/agentrelay/internal/bench/heapdump"
)

// startProfiling, in the profiling build (-tags benchprof), writes heap
// profiles on SIGUSR1 into $RELAYPROF_DIR.
func startProfiling() { heapdump.Listen(os.Getenv("RELAYPROF_DIR")) }
