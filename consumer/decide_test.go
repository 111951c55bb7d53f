package consumer_test

import (
	"errors"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	. "github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// The response-class table. Each row is a row of the README's table; the
// policy is the default one (10 failures of a message's own, 1s initial
// backoff doubling to 4s, Retry-After capped at 15m) and jitter is 1 (the
// top of the jitter range), so delays are exact. "failures" counts the
// message's own failures, this one included; "delivered" is JetStream's
// delivery count.
func TestDecideTable(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{}.WithDefaults()
	const jitter = 1.0
	poison := func(r deadletter.Reason) Outcome { return Outcome{Class: ClassPoison, Reason: r} }
	http := func(status int) Outcome { return Outcome{Class: agentapi.ClassOf(status), Status: status} }
	retryAfter := func(o Outcome, d time.Duration) Outcome { o.RetryAfter = d; return o }
	routeWide := func(o Outcome, nextProbe time.Duration) Outcome {
		o.RouteWide, o.RetryAfter = true, nextProbe
		return o
	}
	of := func(c agentapi.Class) Outcome { return Outcome{Class: c} }
	ack := Action{Verdict: verdict.Ack}
	dead := func(r deadletter.Reason) Action { return Action{Verdict: verdict.DeadLetter, Reason: r} }
	retry := func(d time.Duration) Action { return Action{Verdict: verdict.Retry, Delay: d} }
	own := func(failures int) Attempts { return Attempts{Delivered: failures, Failed: failures} }
	first := Attempts{Delivered: 1}

	rows := []struct {
		row      string
		outcome  Outcome
		attempts Attempts
		want     Action
	}{
		{"202 Accepted: ack", http(202), first, ack},
		{"202 after many deliveries: ack", http(202), Attempts{Delivered: 60}, ack},
		{"other 2xx (200, 204): retry, never ack (only 202 means queued)", http(200), own(1), retry(time.Second)},
		{"204: retry, never ack", http(204), own(1), retry(time.Second)},
		{"200 as the 10th failure: dead letter max_attempts", http(200), own(10), dead(deadletter.ReasonMaxAttempts)},

		{"poison invalid JSON: dead letter at once", poison(deadletter.ReasonInvalidJSON), first, dead(deadletter.ReasonInvalidJSON)},
		{"poison missing input: dead letter at once", poison(deadletter.ReasonMissingInput), first, dead(deadletter.ReasonMissingInput)},
		{"poison input too large: dead letter at once", poison(deadletter.ReasonInputTooLarge), first, dead(deadletter.ReasonInputTooLarge)},
		{"poison invalid UTF-8: dead letter at once", poison(deadletter.ReasonInvalidUTF8), first, dead(deadletter.ReasonInvalidUTF8)},
		{"poison bad idempotency key: dead letter at once", poison(deadletter.ReasonInvalidIdempotencyKey), first, dead(deadletter.ReasonInvalidIdempotencyKey)},

		{"400 Bad Request: dead letter at once", http(400), first, dead(deadletter.ReasonBadRequest)},
		{"403 Forbidden: dead letter at once", http(403), first, dead(deadletter.ReasonForbidden)},
		{"404 Not Found: dead letter at once", http(404), first, dead(deadletter.ReasonNotFound)},
		{"other 4xx (422): dead letter at once", http(422), first, dead(deadletter.ReasonRejected)},
		{"other 4xx (413): dead letter at once", http(413), first, dead(deadletter.ReasonRejected)},

		{"401 (route health stops the route): wait for the next probe", routeWide(http(401), time.Second), first, retry(1250 * time.Millisecond)},
		{"409 (route health stops the route): wait for the next probe", routeWide(http(409), 2*time.Second), own(3), retry(2500 * time.Millisecond)},
		{"route-wide failure after 60 deliveries: still wait, never dead letter", routeWide(http(503), 4*time.Second), Attempts{Delivered: 60}, retry(5 * time.Second)},
		{"route-wide: at least 100ms", routeWide(of(agentapi.ClassTimeout), 0), first, retry(125 * time.Millisecond)},
		{"route gated, not sent: wait for the next probe", retryAfter(of(ClassGated), 2*time.Second), first, retry(2500 * time.Millisecond)},
		{"route gated on the 10th failure: still wait, never dead letter", retryAfter(of(ClassGated), 2*time.Second), own(10), retry(2500 * time.Millisecond)},

		{"429: retry after the initial backoff", http(429), first, retry(time.Second)},
		{"429 with Retry-After: wait as asked", retryAfter(http(429), 2*time.Second), first, retry(2 * time.Second)},
		{"429 with Retry-After of a year: capped at 15m", retryAfter(http(429), 365*24*time.Hour), first, retry(15 * time.Minute)},
		{"429 many messages meet (the route's): wait as asked, never dead letter", routeWide(retryAfter(http(429), 2*time.Second), 2*time.Second), Attempts{Delivered: 60}, retry(2500 * time.Millisecond)},
		{"429 of this message only, as the 10th failure: dead letter max_attempts", http(429), own(10), dead(deadletter.ReasonMaxAttempts)},

		{"500: retry with backoff", http(500), own(1), retry(time.Second)},
		{"503 with Retry-After: wait as asked", retryAfter(http(503), 30*time.Second), own(1), retry(30 * time.Second)},
		{"408 Request Timeout: retry", http(408), own(1), retry(time.Second)},
		{"timeout, 3rd failure: retry with backoff", of(agentapi.ClassTimeout), own(3), retry(4 * time.Second)},
		{"network error, 5th failure: backoff capped at 4s", of(agentapi.ClassNetwork), own(5), retry(4 * time.Second)},
		{"backoff follows failures, not deliveries", of(agentapi.ClassNetwork), Attempts{Delivered: 9, Failed: 1}, retry(time.Second)},
		{"3xx (not followed): retry", http(302), own(1), retry(time.Second)},
		{"401 with route health off: retry with backoff", http(401), own(2), retry(2 * time.Second)},

		{"503 as the 10th failure: dead letter max_attempts", http(503), own(10), dead(deadletter.ReasonMaxAttempts)},
		{"timeout as the 10th failure: dead letter max_attempts", of(agentapi.ClassTimeout), own(10), dead(deadletter.ReasonMaxAttempts)},
		{"2nd own timeout: retry with backoff", of(agentapi.ClassTimeout), Attempts{Delivered: 2, Failed: 2, Timeouts: 2}, retry(2 * time.Second)},
		{"3rd own timeout: dead letter max_attempts (a hang holds a slot for the whole timeout)", of(agentapi.ClassTimeout), Attempts{Delivered: 3, Failed: 3, Timeouts: 3}, dead(deadletter.ReasonMaxAttempts)},
		{"own failure after 50 deliveries of any cause: dead letter max_attempts", http(500), Attempts{Delivered: 50, Failed: 1}, dead(deadletter.ReasonMaxAttempts)},

		{"canceled by our shutdown: hand back at once", of(agentapi.ClassCanceled), own(3), retry(0)},
		{"canceled on the last attempt: hand back, no dead letter", of(agentapi.ClassCanceled), own(10), retry(0)},
	}
	for _, r := range rows {
		if got := Decide(r.outcome, r.attempts, p, jitter); got != r.want {
			t.Errorf("%s: Decide(%+v, %+v) = %+v, want %+v", r.row, r.outcome, r.attempts, got, r.want)
		}
	}
}

func TestDecideHonoursThePolicy(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{MaxAttempts: 3, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 3, MaxRetryAfter: 2 * time.Second}.WithDefaults()
	net := Outcome{Class: agentapi.ClassNetwork, Err: errors.New("reset")}
	for attempt, want := range map[int]Action{
		1: {Verdict: verdict.Retry, Delay: 100 * time.Millisecond},
		2: {Verdict: verdict.Retry, Delay: 300 * time.Millisecond},
		3: {Verdict: verdict.DeadLetter, Reason: deadletter.ReasonMaxAttempts},
	} {
		if got := Decide(net, Attempts{Delivered: attempt, Failed: attempt}, p, 1); got != want {
			t.Errorf("attempt %d: got %+v, want %+v", attempt, got, want)
		}
	}
	ra := Outcome{Class: agentapi.ClassRateLimited, Status: 429, RetryAfter: time.Hour}
	if got := Decide(ra, Attempts{Delivered: 1}, p, 1); got.Delay != 2*time.Second {
		t.Errorf("Retry-After not capped by MaxRetryAfter: %v", got.Delay)
	}
}

// Jitter spreads a delay between half and all of the backoff step, and
// never below the server's Retry-After.
func TestBackoffJitterBounds(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{}.WithDefaults()
	for _, j := range []float64{0, 0.25, 0.5, 0.999} {
		d := Backoff(p, 2, 0, j) // step 2s
		if d < time.Second || d > 2*time.Second {
			t.Errorf("jitter %v: %v outside [1s, 2s]", j, d)
		}
		if d := Backoff(p, 2, 7*time.Second, j); d < 7*time.Second {
			t.Errorf("jitter %v: %v below Retry-After 7s", j, d)
		}
	}
	if Backoff(p, 1, 0, 0) != 500*time.Millisecond {
		t.Errorf("first backoff at zero jitter = %v, want half of 1s", Backoff(p, 1, 0, 0))
	}
	if d := Backoff(p, 1_000_000, 0, 1); d != 4*time.Second {
		t.Errorf("huge failure count: %v, want the 4s cap", d)
	}
}
