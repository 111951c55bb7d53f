package consumer_test

import (
	"errors"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	. "github.com/agentrelay/agentrelay/consumer"
)

// The response-class table. Each row is a row of the README's table; the
// policy is the default one (10 attempts, 1s initial backoff doubling to 5m,
// Retry-After capped at 15m) and jitter is 1 (the top of the jitter range),
// so delays are exact.
func TestDecideTable(t *testing.T) {
	p := RetryPolicy{}
	const jitter = 1.0
	poison := func(r Reason) Outcome { return Outcome{Class: ClassPoison, Reason: r} }
	http := func(status int) Outcome { return Outcome{Class: agentapi.ClassOf(status), Status: status} }
	retryAfter := func(o Outcome, d time.Duration) Outcome { o.RetryAfter = d; return o }
	of := func(c agentapi.Class) Outcome { return Outcome{Class: c} }
	ack := Action{Verdict: VerdictAck}
	dead := func(r Reason) Action { return Action{Verdict: VerdictDeadLetter, Reason: r} }
	retry := func(d time.Duration) Action { return Action{Verdict: VerdictRetry, Delay: d} }

	rows := []struct {
		row     string
		outcome Outcome
		attempt int
		want    Action
	}{
		{"202 Accepted: ack", http(202), 1, ack},
		{"other 2xx (200, 204): retry, never ack (only 202 means queued)", http(200), 1, retry(time.Second)},
		{"204: retry, never ack", http(204), 1, retry(time.Second)},
		{"200 on the last attempt: dead letter max_attempts", http(200), 10, dead(ReasonMaxAttempts)},
		{"202 on the last attempt: ack", http(202), 10, ack},

		{"poison invalid JSON: dead letter at once", poison(ReasonInvalidJSON), 1, dead(ReasonInvalidJSON)},
		{"poison missing input: dead letter at once", poison(ReasonMissingInput), 1, dead(ReasonMissingInput)},
		{"poison input too large: dead letter at once", poison(ReasonInputTooLarge), 1, dead(ReasonInputTooLarge)},
		{"poison invalid UTF-8: dead letter at once", poison(ReasonInvalidUTF8), 1, dead(ReasonInvalidUTF8)},
		{"poison bad idempotency key: dead letter at once", poison(ReasonInvalidIdempotencyKey), 1, dead(ReasonInvalidIdempotencyKey)},

		{"400 Bad Request: dead letter at once", http(400), 1, dead(ReasonBadRequest)},
		{"403 Forbidden: dead letter at once", http(403), 1, dead(ReasonForbidden)},
		{"404 Not Found: dead letter at once", http(404), 1, dead(ReasonNotFound)},
		{"other 4xx (422): dead letter at once", http(422), 1, dead(ReasonRejected)},
		{"other 4xx (413): dead letter at once", http(413), 1, dead(ReasonRejected)},

		{"401 Unauthorized: retry with backoff", http(401), 1, retry(1 * time.Second)},
		{"409 Conflict (not runnable): retry with backoff", http(409), 2, retry(2 * time.Second)},
		{"429 Too Many Requests: retry with backoff", http(429), 3, retry(4 * time.Second)},
		{"429 with a longer Retry-After: wait as asked", retryAfter(http(429), 42*time.Second), 1, retry(42 * time.Second)},
		{"429 with a shorter Retry-After: backoff wins", retryAfter(http(429), time.Second), 4, retry(8 * time.Second)},
		{"429 with Retry-After of a year: capped at 15m", retryAfter(http(429), 365*24*time.Hour), 1, retry(15 * time.Minute)},
		{"500: retry with backoff", http(500), 1, retry(time.Second)},
		{"503 with Retry-After: wait as asked", retryAfter(http(503), 30*time.Second), 1, retry(30 * time.Second)},
		{"408 Request Timeout: retry", http(408), 1, retry(time.Second)},
		{"timeout: retry with backoff", of(agentapi.ClassTimeout), 5, retry(16 * time.Second)},
		{"network error: retry with backoff", of(agentapi.ClassNetwork), 6, retry(32 * time.Second)},
		{"3xx (not followed): retry", http(302), 1, retry(time.Second)},
		{"backoff doubles: 4m16s after attempt 9", of(agentapi.ClassNetwork), 9, retry(256 * time.Second)},

		{"401 on the last attempt: dead letter max_attempts", http(401), 10, dead(ReasonMaxAttempts)},
		{"409 on the last attempt: dead letter max_attempts", http(409), 10, dead(ReasonMaxAttempts)},
		{"503 past the last attempt: dead letter max_attempts", http(503), 11, dead(ReasonMaxAttempts)},
		{"timeout on the last attempt: dead letter max_attempts", of(agentapi.ClassTimeout), 10, dead(ReasonMaxAttempts)},

		{"breaker open: retry when it half-opens (+ up to 25% spread)", retryAfter(of(ClassCircuitOpen), 20*time.Second), 1, retry(25 * time.Second)},
		{"breaker open on the last attempt: still retry, never dead letter", retryAfter(of(ClassCircuitOpen), 20*time.Second), 10, retry(25 * time.Second)},
		{"breaker about to half-open: wait at least the initial backoff", of(ClassCircuitOpen), 1, retry(1250 * time.Millisecond)},
		{"canceled by our shutdown: hand back at once", of(agentapi.ClassCanceled), 3, retry(0)},
		{"canceled on the last attempt: hand back, no dead letter", of(agentapi.ClassCanceled), 10, retry(0)},
	}
	for _, r := range rows {
		if got := Decide(r.outcome, r.attempt, p, jitter); got != r.want {
			t.Errorf("%s: Decide(%+v, attempt %d) = %+v, want %+v", r.row, r.outcome, r.attempt, got, r.want)
		}
	}
}

func TestDecideHonoursThePolicy(t *testing.T) {
	p := RetryPolicy{MaxAttempts: 3, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 3, MaxRetryAfter: 2 * time.Second}
	net := Outcome{Class: agentapi.ClassNetwork, Err: errors.New("reset")}
	for attempt, want := range map[int]Action{
		1: {Verdict: VerdictRetry, Delay: 100 * time.Millisecond},
		2: {Verdict: VerdictRetry, Delay: 300 * time.Millisecond},
		3: {Verdict: VerdictDeadLetter, Reason: ReasonMaxAttempts},
	} {
		if got := Decide(net, attempt, p, 1); got != want {
			t.Errorf("attempt %d: got %+v, want %+v", attempt, got, want)
		}
	}
	ra := Outcome{Class: agentapi.ClassRateLimited, Status: 429, RetryAfter: time.Hour}
	if got := Decide(ra, 1, p, 1); got.Delay != 2*time.Second {
		t.Errorf("Retry-After not capped by MaxRetryAfter: %v", got.Delay)
	}
}

// Jitter spreads a delay between half and all of the backoff step, and
// never below the server's Retry-After.
func TestBackoffJitterBounds(t *testing.T) {
	p := RetryPolicy{}
	for _, j := range []float64{0, 0.25, 0.5, 0.999} {
		d := Backoff(p, 4, 0, j) // step 8s
		if d < 4*time.Second || d > 8*time.Second {
			t.Errorf("jitter %v: %v outside [4s, 8s]", j, d)
		}
		if d := Backoff(p, 4, 7*time.Second, j); d < 7*time.Second {
			t.Errorf("jitter %v: %v below Retry-After 7s", j, d)
		}
	}
	if Backoff(p, 1, 0, 0) != 500*time.Millisecond {
		t.Errorf("first backoff at zero jitter = %v, want half of 1s", Backoff(p, 1, 0, 0))
	}
	if d := Backoff(p, 1_000_000, 0, 1); d != 5*time.Minute {
		t.Errorf("huge attempt number: %v, want the 5m cap", d)
	}
}
