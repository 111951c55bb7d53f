package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// FaultKind names an injected fault.
type FaultKind string

// The fault kinds. Step 3 of the handling order (see the package doc)
// applies them.
const (
	// FaultNone injects nothing. A scripted FaultNone uses up one request and
	// lets it through with no probabilistic fault either. Scripts use it for
	// "succeed once, then fail".
	FaultNone FaultKind = ""
	// FaultServerError answers Fault.Status (default 503) with a short text
	// body, plus Retry-After when Fault.RetryAfter is set.
	FaultServerError FaultKind = "server_error"
	// FaultRateLimit answers 429 with Retry-After: Fault.RetryAfter (default
	// "1").
	FaultRateLimit FaultKind = "rate_limit"
	// FaultHang never answers. It waits until the request context ends
	// (client gone, server closed) or Faults.HangFor elapses. Then it closes
	// the connection without a response.
	FaultHang FaultKind = "hang"
	// FaultDropAfterAccept accepts the event fully (ledger and idempotency
	// key) and then closes the connection without a response. The client
	// sees a network error, though the event was enqueued.
	FaultDropAfterAccept FaultKind = "drop_after_accept"
)

// Fault is one scripted fault (see Emulator.Script). It is also the result
// of a probabilistic draw.
type Fault struct {
	Kind FaultKind
	// Status is the code sent by FaultServerError (default 503). Any code
	// from 200 to 999 is used as given. Anything else means 503.
	Status int
	// RetryAfter is the raw Retry-After value to send. It may be seconds, an
	// HTTP-date, or garbage for hostile tests. Empty means no header, except
	// for FaultRateLimit, which then sends "1".
	RetryAfter string
	// TriggerID, when set, limits the fault to requests for that trigger id.
	// A scripted fault for another id stays in the queue.
	TriggerID string
}

// Faults configures latency and probabilistic faults for every request. At
// most one fault is drawn per request. The rates are probabilities, and
// their sum should not exceed 1 (see Validate). When it does, the rates are
// taken in field order until the sum reaches 1, and later rates lose out.
type Faults struct {
	Latency       time.Duration // delay before every answer on the trigger route
	LatencyJitter time.Duration // an extra delay drawn uniformly from [0, LatencyJitter)

	ServerErrorRate float64 // probability of a 503 (with Retry-After when RetryAfter is set)
	RateLimitRate   float64 // probability of a 429 with Retry-After: RetryAfter (default "1")
	RetryAfter      string
	HangRate        float64 // probability of a hang
	DropRate        float64 // probability of drop_after_accept

	Seed    int64         // seeds the random source so runs repeat; 0 picks a random seed
	HangFor time.Duration // upper bound of a hang (default DefaultHangFor)

	// ByInput are faults tied to the event rather than to chance: a request
	// whose body holds an InputFault's Marker meets its Fault every time,
	// as an API bug triggered by one input would. They come before the
	// script and the random draw.
	ByInput []InputFault
}

// InputFault is a fault for every request whose body holds Marker.
type InputFault struct {
	Marker string
	Fault  Fault
}

// Validate reports settings that SetFaults would have to clamp: a rate
// outside [0, 1] or NaN, rates summing to more than 1, or a negative
// duration. Command-line front ends call it to reject bad flags.
func (f Faults) Validate() error {
	var errs []error
	sum := 0.0
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"ServerErrorRate", f.ServerErrorRate},
		{"RateLimitRate", f.RateLimitRate},
		{"HangRate", f.HangRate},
		{"DropRate", f.DropRate},
	} {
		if math.IsNaN(r.v) || r.v < 0 || r.v > 1 {
			errs = append(errs, fmt.Errorf("emulator: %s %v is not in [0, 1]", r.name, r.v))
			continue
		}
		sum += r.v
	}
	if sum > 1 {
		errs = append(errs, fmt.Errorf("emulator: fault rates sum to %v, more than 1", sum))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"Latency", f.Latency},
		{"LatencyJitter", f.LatencyJitter},
		{"HangFor", f.HangFor},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("emulator: %s %v is negative", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// SetFaults replaces the latency and probabilistic fault settings. A Seed
// restarts the random sequence. Out-of-range values are clamped: rates to
// [0, 1] (NaN to 0), and negative durations to 0. It does not touch the
// script.
func (e *Emulator) SetFaults(f Faults) { e.faults.Store(newFaultState(f)) }

// Faults returns the current settings, after clamping.
func (e *Emulator) Faults() Faults { return e.faults.Load().Faults }

// Script queues one-shot faults for the next requests, in FIFO order. Each
// request uses up the first queued fault that matches its trigger id (see
// Fault.TriggerID). A scripted fault overrides the probabilistic ones.
// Unknown kinds are answered with 500 and a body that names the kind, so a
// typo fails loudly.
func (e *Emulator) Script(faults ...Fault) {
	e.scriptMu.Lock()
	defer e.scriptMu.Unlock()
	e.script = append(e.script, faults...)
	e.scriptLen.Store(int64(len(e.script)))
}

// ScriptLen returns the number of scripted faults not yet used.
func (e *Emulator) ScriptLen() int { return int(e.scriptLen.Load()) }

// nextFault returns the fault for a request to trigger id with body. Kind
// is FaultNone when neither the input, the script nor the random draw
// produced one.
func (e *Emulator) nextFault(id string, body []byte, fs *faultState) Fault {
	for _, f := range fs.ByInput {
		if f.Marker != "" && bytes.Contains(body, []byte(f.Marker)) && (f.Fault.TriggerID == "" || f.Fault.TriggerID == id) {
			return f.Fault
		}
	}
	if e.scriptLen.Load() > 0 {
		if f, ok := e.popScript(id); ok {
			return f
		}
	}
	return fs.roll()
}

// popScript removes and returns the first scripted fault for id. The scan
// covers only the script, which tests keep short. It never touches the
// ledger or the configuration.
func (e *Emulator) popScript(id string) (Fault, bool) {
	e.scriptMu.Lock()
	defer e.scriptMu.Unlock()
	for i, f := range e.script {
		if f.TriggerID == "" || f.TriggerID == id {
			if i == 0 {
				// The usual case. Popping the head is O(1), even for long
				// scripts.
				e.script[0] = Fault{}
				e.script = e.script[1:]
			} else {
				e.script = slices.Delete(e.script, i, i+1)
			}
			e.scriptLen.Store(int64(len(e.script)))
			return f, true
		}
	}
	return Fault{}, false
}

// faultState is an immutable, normalised Faults plus its random source. A
// new one replaces it on every SetFaults, so requests read the settings
// without a lock.
type faultState struct {
	Faults
	random bool // a rate or the jitter is non-zero, so the random source is needed

	mu  sync.Mutex // guards rng, which is not safe for concurrent use
	rng *rand.Rand
}

func newFaultState(f Faults) *faultState {
	clampRate := func(r float64) float64 {
		if math.IsNaN(r) || r < 0 {
			return 0
		}
		return min(r, 1)
	}
	f.ServerErrorRate = clampRate(f.ServerErrorRate)
	f.RateLimitRate = clampRate(f.RateLimitRate)
	f.HangRate = clampRate(f.HangRate)
	f.DropRate = clampRate(f.DropRate)
	f.Latency = max(f.Latency, 0)
	f.LatencyJitter = max(f.LatencyJitter, 0)
	if f.HangFor <= 0 {
		f.HangFor = DefaultHangFor
	}
	f.ByInput = slices.Clone(f.ByInput)
	seed := uint64(f.Seed)
	if f.Seed == 0 {
		seed = rand.Uint64()
	}
	return &faultState{
		Faults: f,
		random: f.ServerErrorRate+f.RateLimitRate+f.HangRate+f.DropRate > 0 || f.LatencyJitter > 0,
		rng:    rand.New(rand.NewPCG(seed, seed)),
	}
}

// delay returns the latency to apply to one request.
func (s *faultState) delay() time.Duration {
	d := s.Latency
	if s.LatencyJitter > 0 {
		s.mu.Lock()
		d += time.Duration(s.rng.Int64N(int64(s.LatencyJitter)))
		s.mu.Unlock()
	}
	return d
}

// roll draws at most one probabilistic fault. A single uniform draw is split
// into bands, one per rate. So the kinds exclude each other, and each
// happens with exactly its configured probability.
func (s *faultState) roll() Fault {
	if !s.random {
		return Fault{}
	}
	s.mu.Lock()
	u := s.rng.Float64()
	s.mu.Unlock()
	switch {
	case u < s.ServerErrorRate:
		return Fault{Kind: FaultServerError, Status: 503, RetryAfter: s.RetryAfter}
	case u < s.ServerErrorRate+s.RateLimitRate:
		return Fault{Kind: FaultRateLimit, RetryAfter: s.RetryAfter}
	case u < s.ServerErrorRate+s.RateLimitRate+s.HangRate:
		return Fault{Kind: FaultHang}
	case u < s.ServerErrorRate+s.RateLimitRate+s.HangRate+s.DropRate:
		return Fault{Kind: FaultDropAfterAccept}
	}
	return Fault{}
}

// sleep waits for d, or until ctx ends. It reports whether the full delay
// passed. A timer, not time.Sleep, so that a departed client or a closing
// server frees the handler at once.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
