package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelayDoublesUpToMax(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Delay(i); got != w*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := p.Delay(1 << 20); got != time.Second {
		t.Errorf("Delay of a huge attempt = %v, want the cap", got)
	}
}

var errNotYet = errors.New("not yet")

func TestRetryUntilSuccess(t *testing.T) {
	calls := 0
	var waits []time.Duration
	err := Retry(context.Background(), Policy{Min: time.Millisecond, Max: 2 * time.Millisecond},
		func(context.Context) error {
			if calls++; calls < 4 {
				return errNotYet
			}
			return nil
		},
		func(err error, wait time.Duration) bool { waits = append(waits, wait); return true })
	if err != nil || calls != 4 {
		t.Fatalf("Retry = %v after %d calls, want nil after 4", err, calls)
	}
	if len(waits) != 3 || waits[0] != time.Millisecond || waits[2] != 2*time.Millisecond {
		t.Errorf("waits %v, want 1ms, 2ms, 2ms", waits)
	}
}

func TestRetryStopsWhenToldOrWhenCtxEnds(t *testing.T) {
	permanent := errors.New("refused")
	calls := 0
	err := Retry(context.Background(), Policy{Min: time.Millisecond, Max: time.Millisecond},
		func(context.Context) error { calls++; return permanent },
		func(err error, _ time.Duration) bool { return !errors.Is(err, permanent) })
	if !errors.Is(err, permanent) || calls != 1 {
		t.Errorf("Retry = %v after %d calls, want the permanent error after 1", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = Retry(ctx, Policy{Min: time.Hour, Max: time.Hour},
		func(context.Context) error { calls++; return errNotYet },
		func(error, time.Duration) bool { cancel(); return true })
	if !errors.Is(err, errNotYet) || calls != 1 {
		t.Errorf("Retry = %v after %d calls, want the last error after 1 once ctx ended", err, calls)
	}
}
