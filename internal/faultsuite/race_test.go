//go:build race

package faultsuite

// raceEnabled: this test binary runs with the race detector, so the worker
// processes are built with it too.
const raceEnabled = true
