// Package backoff is how agentrelay waits between attempts at something
// that is not there yet (a NATS server starting after the worker, a stream
// an operator has not created, a JetStream API answer lost in a leader
// change): exponential delays, and a retry loop bound to a context.
//
// Messages are not retried here: their delays are consumer.Backoff's, with
// jitter and Retry-After, decided per message by consumer.Decide.
package backoff

import (
	"context"
	"time"
)

// Policy is an exponential backoff: Min, doubling after every attempt, up
// to Max.
type Policy struct {
	Min, Max time.Duration
}

// Delay is the wait after the attempt-th failed attempt (0-based):
// Min × 2^attempt, capped at Max.
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Min
	for i := 0; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// Retry calls op until it returns nil, again says not to go on, or ctx
// ends; between attempts it waits p.Delay. again is called after every
// failure with the error and the wait before the next attempt (to log it),
// and returns whether to try again. Retry returns op's last error, nil when
// it succeeded. op is always called at least once.
func Retry(ctx context.Context, p Policy, op func(context.Context) error, again func(err error, wait time.Duration) bool) error {
	for attempt := 0; ; attempt++ {
		err := op(ctx)
		if err == nil {
			return nil
		}
		wait := p.Delay(attempt)
		if ctx.Err() != nil || !again(err, wait) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
