// Package wait polls a condition in a test until it holds or a deadline
// passes: tests wait for what they expect, never for a fixed time. It
// depends on nothing of agentrelay, so that the tests of packages
// internal/testenv itself imports (natsembed, the API emulator) can use it;
// other tests call testenv.Eventually.
package wait

import (
	"errors"
	"testing"
	"time"
)

// A condition is polled after firstInterval, then at intervals growing to
// maxInterval: a condition that holds soon is seen soon, and one that takes
// seconds (many ask a JetStream server, which answers at a CPU cost to the
// whole test run) is asked at most 20 times a second.
const (
	firstInterval = 10 * time.Millisecond
	maxInterval   = 50 * time.Millisecond
)

// For polls cond until it holds or timeout passes, then fails the test with
// what it waited for.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}) {
		t.Fatalf("timed out after %v: %s", timeout, what)
	}
}

// ForNil polls f until it returns nil or timeout passes, then fails the
// test with what it waited for and f's last error.
func ForNil(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	var last error
	if !poll(timeout, func() error { last = f(); return last }) {
		t.Fatalf("timed out after %v: %s: %v", timeout, what, last)
	}
}

var errNotYet = errors.New("not yet")

// poll calls f until it returns nil (true) or timeout passes (false).
func poll(timeout time.Duration, f func() error) bool {
	deadline := time.Now().Add(timeout)
	interval := firstInterval
	for f() != nil {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
		interval = min(interval*3/2, maxInterval)
	}
	return true
}
