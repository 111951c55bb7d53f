package bench

import (
	"fmt"
	"io"
	"slices"
)

// Summary is the median over repetitions of one system in one scenario.
type Summary struct {
	Scenario Scenario
	System   System
	Runs     int
	TimedOut int
	Rate     float64
	// RatioRef is the median of rate ÷ the reference's rate in the same
	// repetition (0 for the reference itself or when there is none).
	RatioRef float64
	// RatioIdeal is rate ÷ concurrency/latency (0 when latency is 0).
	RatioIdeal float64
	// RatioOne is the median of rate ÷ the one-replica scenario's rate of
	// the same system and repetition.
	RatioOne         float64
	P50, P99, MaxGap float64 // seconds
	PeakRSS          float64 // bytes
	PeakLive         float64
	AllocsPerEvent   float64
	BytesPerEvent    float64
	CPUPer10k        float64 // worker CPU seconds per 10,000 events
	TotalCPUPer10k   float64 // worker + broker + emulator + monitor
	Dups, Replays    float64
	// For scenario (e): heap, stack and RSS growth per message in flight
	// at steady state over the idle reading.
	HeapPerInFlight, StackPerInFlight, RSSPerInFlight, InFlight float64
	// For the soak.
	Soak *SoakSummary
}

// SoakSummary says whether memory and goroutines stayed flat.
type SoakSummary struct {
	Seconds                      float64
	Events                       int
	LiveFirst, LiveLast          float64 // median live heap, second and last quarter of the run
	GorFirst, GorLast            float64
	RSSFirst, RSSLast            float64
	LiveSlopePerMin              float64 // least-squares slope of live heap after the first quarter, bytes/min
	GoroutinesBefore, GorAfter   int     // before start and after drain
	HeapPerInFlight, InFlightMed float64
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Summarize takes medians over repetitions.
func Summarize(results []RunResult) []Summary {
	byKey := map[string]RunResult{}
	key := func(sc string, sys System, rep int) string { return fmt.Sprintf("%s/%s/%d", sc, sys, rep) }
	for _, r := range results {
		byKey[key(r.Scenario, r.System, r.Rep)] = r
	}
	var out []Summary
	for _, sc := range Scenarios() {
		for _, sys := range []System{Reference, Relay} {
			var rs []RunResult
			for _, r := range results {
				if r.Scenario == sc.Name && r.System == sys {
					rs = append(rs, r)
				}
			}
			if len(rs) == 0 {
				continue
			}
			s := Summary{Scenario: sc, System: sys, Runs: len(rs)}
			var rate, ratioRef, ratioOne, p50, p99, gap, rss, live, apm, bpm, cpu, tcpu, dups, repl, hpi, spi, rpi, infl []float64
			for _, r := range rs {
				if r.TimedOut {
					s.TimedOut++
				}
				ev := float64(max(r.Events, 1))
				rate = append(rate, r.Rate)
				if sys != Reference {
					if ref, ok := byKey[key(sc.Name, Reference, r.Rep)]; ok && ref.Rate > 0 {
						ratioRef = append(ratioRef, r.Rate/ref.Rate)
					}
				}
				if sc.OneReplica != "" {
					if one, ok := byKey[key(sc.OneReplica, sys, r.Rep)]; ok && one.Rate > 0 {
						ratioOne = append(ratioOne, r.Rate/one.Rate)
					}
				}
				p50 = append(p50, r.P50)
				p99 = append(p99, r.P99)
				gap = append(gap, r.MaxGap)
				rss = append(rss, float64(r.PeakRSS))
				live = append(live, float64(r.PeakLive))
				apm = append(apm, float64(r.Allocs)/ev)
				bpm = append(bpm, float64(r.AllocBytes)/ev)
				cpu = append(cpu, r.WorkerCPU/ev*1e4)
				tcpu = append(tcpu, (r.WorkerCPU+r.ParentCPU)/ev*1e4)
				dups = append(dups, float64(r.Dups))
				repl = append(repl, float64(r.Replays))
				if h, st, rsz, n, ok := perInFlight(r, sc.InFlight); ok {
					hpi, spi, rpi, infl = append(hpi, h), append(spi, st), append(rpi, rsz), append(infl, n)
				}
				if sc.Soak {
					s.Soak = soakSummary(r, sc.InFlight)
				}
			}
			s.Rate, s.RatioRef, s.RatioOne = median(rate), median(ratioRef), median(ratioOne)
			if ideal := sc.Ideal(); ideal > 0 {
				s.RatioIdeal = s.Rate / ideal
			}
			s.P50, s.P99, s.MaxGap = median(p50), median(p99), median(gap)
			s.PeakRSS, s.PeakLive = median(rss), median(live)
			s.AllocsPerEvent, s.BytesPerEvent = median(apm), median(bpm)
			s.CPUPer10k, s.TotalCPUPer10k = median(cpu), median(tcpu)
			s.Dups, s.Replays = median(dups), median(repl)
			s.HeapPerInFlight, s.StackPerInFlight, s.RSSPerInFlight, s.InFlight = median(hpi), median(spi), median(rpi), median(infl)
			out = append(out, s)
		}
	}
	return out
}

// perInFlight is the heap, stack and RSS above the idle reading per message
// in flight, over the samples taken with the worker at least 90 % full
// (single-replica runs only).
func perInFlight(r RunResult, limit int) (heap, stack, rss, inFlight float64, ok bool) {
	if len(r.Workers) != 1 || limit < 1000 {
		return 0, 0, 0, 0, false
	}
	w := r.Workers[0]
	var h, st, rs, n []float64
	for _, s := range w.Samples {
		if s.InFlight >= limit*9/10 {
			h = append(h, float64(s.LiveHeap)-float64(w.Idle.LiveHeap))
			st = append(st, float64(s.Stacks)-float64(w.Idle.Stacks))
			rs = append(rs, float64(s.RSS)-float64(w.Idle.RSS))
			n = append(n, float64(s.InFlight))
		}
	}
	if len(n) == 0 {
		return 0, 0, 0, 0, false
	}
	m := median(n)
	return median(h) / m, median(st) / m, median(rs) / m, m, true
}

func soakSummary(r RunResult, limit int) *SoakSummary {
	if len(r.Workers) == 0 {
		return nil
	}
	w := r.Workers[0]
	ss := &SoakSummary{Seconds: r.Seconds, Events: r.Events, GoroutinesBefore: w.GoroutinesBefore, GorAfter: w.GoroutinesAfter}
	n := len(w.Samples)
	if n < 8 {
		return ss
	}
	q := n / 4
	pick := func(from, to int, f func(Sample) float64) float64 {
		var xs []float64
		for _, s := range w.Samples[from:to] {
			xs = append(xs, f(s))
		}
		return median(xs)
	}
	live := func(s Sample) float64 { return float64(s.LiveHeap) }
	gor := func(s Sample) float64 { return float64(s.Goroutines) }
	rss := func(s Sample) float64 { return float64(s.RSS) }
	ss.LiveFirst, ss.LiveLast = pick(q, 2*q, live), pick(n-q, n, live)
	ss.GorFirst, ss.GorLast = pick(q, 2*q, gor), pick(n-q, n, gor)
	ss.RSSFirst, ss.RSSLast = pick(q, 2*q, rss), pick(n-q, n, rss)
	// least squares over the last three quarters
	var sx, sy, sxx, sxy, k float64
	for _, s := range w.Samples[q:] {
		x, y := s.T/60, float64(s.LiveHeap)
		sx, sy, sxx, sxy, k = sx+x, sy+y, sxx+x*x, sxy+x*y, k+1
	}
	if d := k*sxx - sx*sx; d != 0 {
		ss.LiveSlopePerMin = (k*sxy - sx*sy) / d
	}
	if h, _, _, m, ok := perInFlight(r, limit); ok {
		ss.HeapPerInFlight, ss.InFlightMed = h, m
	}
	return ss
}

func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }

// WriteMarkdown writes the summary tables.
func WriteMarkdown(w io.Writer, sums []Summary) {
	fmt.Fprintln(w, "| Scenario | System | events/s | vs reference | vs ideal | p50 ms | p99 ms | max ack gap ms | peak RSS | peak live heap | allocs/event | B/event | worker CPU s/10k | all CPU s/10k |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range sums {
		if s.Scenario.Soak {
			continue
		}
		ratio := "—"
		if s.RatioRef > 0 {
			ratio = fmt.Sprintf("%.2f×", s.RatioRef)
		}
		ideal := "—"
		if s.RatioIdeal > 0 {
			ideal = fmt.Sprintf("%.1f %%", 100*s.RatioIdeal)
		}
		if s.RatioOne > 0 {
			what := "one replica"
			if s.Scenario.Ordered {
				what = "unordered"
			}
			ideal += fmt.Sprintf(" (%.2f× %s)", s.RatioOne, what)
		}
		note := ""
		if s.TimedOut > 0 {
			note = fmt.Sprintf(" (%d/%d timed out)", s.TimedOut, s.Runs)
		}
		if s.Dups > 0 || s.Replays > 0 {
			note += fmt.Sprintf(" (dup settles %.0f, API replays %.0f)", s.Dups, s.Replays)
		}
		fmt.Fprintf(w, "| %s | %s%s | %.0f | %s | %s | %.1f | %.1f | %.0f | %s | %s | %.1f | %.0f | %.2f | %.2f |\n",
			s.Scenario.Title, s.System, note, s.Rate, ratio, ideal, s.P50*1e3, s.P99*1e3, s.MaxGap*1e3,
			mib(s.PeakRSS), mib(s.PeakLive), s.AllocsPerEvent, s.BytesPerEvent, s.CPUPer10k, s.TotalCPUPer10k)
	}
	var mem []Summary
	for _, s := range sums {
		if s.InFlight > 0 && !s.Scenario.Soak {
			mem = append(mem, s)
		}
	}
	if len(mem) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Memory per message in flight (steady state, over the idle reading; heap = live heap after GC):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| Scenario | System | in flight | heap/msg | stack/msg | RSS/msg |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
		for _, s := range mem {
			fmt.Fprintf(w, "| %s | %s | %.0f | %.1f KiB | %.1f KiB | %.1f KiB |\n", s.Scenario.Title, s.System, s.InFlight,
				s.HeapPerInFlight/1024, s.StackPerInFlight/1024, s.RSSPerInFlight/1024)
		}
	}
	for _, s := range sums {
		if ss := s.Soak; ss != nil {
			fmt.Fprintln(w)
			fmt.Fprintf(w, "Soak (%s, %s): %.0f s, %d events (%.0f/s), %.0f in flight, heap/msg in flight %.1f KiB.\n",
				s.Scenario.Title, s.System, ss.Seconds, ss.Events, float64(ss.Events)/max(ss.Seconds, 1), ss.InFlightMed, ss.HeapPerInFlight/1024)
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| | 2nd quarter (median) | last quarter (median) |")
			fmt.Fprintln(w, "|---|---:|---:|")
			fmt.Fprintf(w, "| live heap | %s | %s |\n", mib(ss.LiveFirst), mib(ss.LiveLast))
			fmt.Fprintf(w, "| RSS | %s | %s |\n", mib(ss.RSSFirst), mib(ss.RSSLast))
			fmt.Fprintf(w, "| goroutines | %.0f | %.0f |\n", ss.GorFirst, ss.GorLast)
			fmt.Fprintln(w)
			fmt.Fprintf(w, "Live-heap trend after warm-up: %+.2f MiB/min. Goroutines before start: %d; after drain and close: %d.\n",
				ss.LiveSlopePerMin/(1<<20), ss.GoroutinesBefore, ss.GorAfter)
		}
	}
}

func (s System) String() string { return string(s) }
