// Package bench measures agentrelay against a bare reference loop written
// directly on nats.go's jetstream package, on the same published events, in
// one run on one machine: an embedded nats-server and the API emulator on
// loopback in this process, each worker (the reference or agentrelay) in a
// child process of its own, so that its CPU time, allocations, heap and RSS
// are its own and not the broker's or the emulator's.
//
// Publish-to-settle times are read off the wire: a subscription to the
// stream's $JS.ACK subjects sees every ack, nak and term with the stored
// message's timestamp, for any worker alike.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/natsembed"
)

const (
	streamName = "BENCH"
	subject    = "bench.events"
	durable    = "bench"
	triggerID  = "agtch_bench"
	token      = "tok-bench-7f3a"
)

// Scenario is one measured setting.
type Scenario struct {
	Name     string
	Title    string
	Latency  time.Duration // API latency
	InFlight int           // per replica
	Replicas int
	Events   int     // events per run (before Options.Scale)
	Rate     float64 // live arrivals per second; 0: the whole backlog is published before the worker starts
	// PoisonEvery makes every n-th event poison (invalid JSON).
	PoisonEvery int
	// ServerErrorRate is the emulator's probability of a 503.
	ServerErrorRate float64
	// Rate99 measures events/s up to 99 % settled instead of all.
	Rate99 bool
	// Soak runs for Options.Soak instead of a fixed number of events, with
	// the stream topped up so the worker stays full.
	Soak bool
	// HTTPS serves the API over TLS with HTTP/2 (as the real API is),
	// instead of plain HTTP/1.1 on loopback.
	HTTPS bool
	// Ordered runs agentrelay's route with ordering by conversation key
	// (the events carry 1,000 distinct keys).
	Ordered bool
	Systems []System
	// OneReplica names the scenario whose result (same system, same
	// repetition) is the one-replica baseline of this one.
	OneReplica string
}

// Ideal is concurrency ÷ latency, the Little's-law bound (0 when the latency
// is 0 and there is none).
func (s Scenario) Ideal() float64 {
	if s.Latency <= 0 {
		return 0
	}
	return float64(s.InFlight*s.Replicas) / s.Latency.Seconds()
}

// Scenarios are the scenarios, in order.
func Scenarios() []Scenario {
	both := []System{Reference, Relay}
	return []Scenario{
		{Name: "a", Title: "(a) latency 0, 256 in flight, backlog", Latency: 0, InFlight: 256, Replicas: 1, Events: 60000, Systems: both},
		{Name: "b-backlog", Title: "(b) 50 ms, 256 in flight, backlog", Latency: 50 * time.Millisecond, InFlight: 256, Replicas: 1, Events: 30720, Systems: both},
		{Name: "b-live", Title: "(b) 50 ms, 256 in flight, live arrivals at 1.1× ideal", Latency: 50 * time.Millisecond, InFlight: 256, Replicas: 1, Events: 30720, Rate: 5632, Systems: both},
		{Name: "b-live80", Title: "(b) 50 ms, 256 in flight, live arrivals at 0.8× ideal", Latency: 50 * time.Millisecond, InFlight: 256, Replicas: 1, Events: 20480, Rate: 4096, Systems: both},
		{Name: "b-ordered", Title: "(f) 50 ms, 256 in flight, backlog, ordered by 1,000 conversation keys (vs the same route unordered)", Latency: 50 * time.Millisecond, InFlight: 256, Replicas: 1, Events: 30720, Ordered: true, Systems: []System{Relay}, OneReplica: "b-backlog"},
		{Name: "c", Title: "(c) 50 ms, 3 replicas × 256, backlog", Latency: 50 * time.Millisecond, InFlight: 256, Replicas: 3, Events: 92160, Systems: both, OneReplica: "b-backlog"},
		{Name: "b250", Title: "(c') 250 ms, 1 replica × 256, backlog", Latency: 250 * time.Millisecond, InFlight: 256, Replicas: 1, Events: 10240, Systems: both},
		{Name: "c250", Title: "(c') 250 ms, 3 replicas × 256, backlog", Latency: 250 * time.Millisecond, InFlight: 256, Replicas: 3, Events: 30720, Systems: both, OneReplica: "b250"},
		{Name: "d", Title: "(d) latency 0, 256 in flight, 10 % poison + 10 % 503, backlog (events/s to 99 % settled)", Latency: 0, InFlight: 256, Replicas: 1, Events: 40000, PoisonEvery: 10, ServerErrorRate: 0.1, Rate99: true, Systems: both},
		{Name: "e", Title: "(e) 1 s latency, 10,000 in flight, backlog", Latency: time.Second, InFlight: 10000, Replicas: 1, Events: 40000, Systems: both},
		{Name: "e-h2", Title: "(e) 1 s latency, 10,000 in flight, backlog, HTTPS + HTTP/2", Latency: time.Second, InFlight: 10000, Replicas: 1, Events: 40000, HTTPS: true, Systems: both},
		{Name: "soak", Title: "(e) soak: 1 s latency, 10,000 in flight, stream kept full", Latency: time.Second, InFlight: 10000, Replicas: 1, Soak: true, Systems: []System{Relay}},
	}
}

// Options configure Run.
type Options struct {
	// Scenarios to run by name; empty means all.
	Scenarios []string
	// Systems to run; empty means each scenario's own.
	Systems []System
	// Reps is how many times each measurement is repeated. Default 5.
	Reps int
	// Scale multiplies every scenario's event count. Default 1.
	Scale float64
	// Soak is how long the soak runs. Default 60s.
	Soak time.Duration
	// ProfileDir, when set, receives CPU and allocation profiles of every
	// worker (first repetition only).
	ProfileDir string
	// InProcess runs workers as goroutines instead of child processes
	// (tests): nothing per-worker is then meaningful but the numbers exist.
	InProcess bool
	// Executable is the program that runs "worker" (default: this one).
	Executable string
	// Log receives progress lines. Default: discard.
	Log io.Writer
}

// RunResult is one run of one system in one scenario.
type RunResult struct {
	Scenario string  `json:"scenario"`
	System   System  `json:"system"`
	Rep      int     `json:"rep"`
	Events   int     `json:"events"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"`
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
	Max      float64 `json:"max"`
	MaxGap   float64 `json:"max_gap"`
	Naks     int     `json:"naks"`
	Terms    int     `json:"terms"`
	Dups     int     `json:"dups"`
	// Replays are API calls answered from the emulator's idempotency map:
	// an event triggered more than once.
	Replays    uint64         `json:"replays"`
	WorkerCPU  float64        `json:"worker_cpu"`
	ParentCPU  float64        `json:"parent_cpu"`
	Allocs     uint64         `json:"allocs"`
	AllocBytes uint64         `json:"alloc_bytes"`
	PeakRSS    uint64         `json:"peak_rss"`
	PeakLive   uint64         `json:"peak_live_heap"`
	TimedOut   bool           `json:"timed_out"`
	Workers    []WorkerResult `json:"workers"`
}

// env is the broker, the emulator and the connections of the parent.
type env struct {
	o      Options
	dir    string
	ns     *natsembed.Server
	emu    *emulator.Emulator
	api    *emulator.Server
	apiTLS *httpsServer
	nc     *nats.Conn // publisher and admin
	js     jetstream.JetStream
	mon    *nats.Conn // ack monitor
	runSeq int
}

func newEnv(o Options) (*env, error) {
	dir, err := os.MkdirTemp("", "relaybench-")
	if err != nil {
		return nil, err
	}
	e := &env{o: o, dir: dir}
	e.ns, err = natsembed.Start(natsembed.Options{StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		e.close()
		return nil, err
	}
	e.emu = emulator.New(emulator.WithToken(token, "*"), emulator.WithTrigger(triggerID, true), emulator.WithRequestLog(0))
	if e.api, err = e.emu.Listen("127.0.0.1:0"); err != nil {
		e.close()
		return nil, err
	}
	if e.apiTLS, err = listenHTTPS(e.emu); err != nil {
		e.close()
		return nil, err
	}
	if e.nc, err = nats.Connect(e.ns.ClientURL()); err != nil {
		e.close()
		return nil, err
	}
	if e.js, err = jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		e.close()
		return nil, err
	}
	if e.mon, err = nats.Connect(e.ns.ClientURL()); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	if e.mon != nil {
		e.mon.Close()
	}
	if e.nc != nil {
		e.nc.Close()
	}
	if e.api != nil {
		_ = e.api.Close()
	}
	if e.apiTLS != nil {
		e.apiTLS.close()
	}
	if e.ns != nil {
		e.ns.Shutdown()
	}
	_ = os.RemoveAll(e.dir)
}

func (e *env) logf(format string, args ...any) {
	if e.o.Log != nil {
		fmt.Fprintf(e.o.Log, format+"\n", args...)
	}
}

// Run runs the scenarios and returns every run's result.
func Run(ctx context.Context, o Options) ([]RunResult, error) {
	if o.Reps <= 0 {
		o.Reps = 5
	}
	if o.Scale <= 0 {
		o.Scale = 1
	}
	if o.Soak <= 0 {
		o.Soak = 60 * time.Second
	}
	if o.Executable == "" && !o.InProcess {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.Executable = exe
	}
	e, err := newEnv(o)
	if err != nil {
		return nil, err
	}
	defer e.close()

	var scs []Scenario
	for _, sc := range Scenarios() {
		if len(o.Scenarios) == 0 || slices.Contains(o.Scenarios, sc.Name) {
			if len(o.Systems) > 0 {
				sc.Systems = slices.DeleteFunc(slices.Clone(sc.Systems), func(s System) bool { return !slices.Contains(o.Systems, s) })
			}
			scs = append(scs, sc)
		}
	}
	var out []RunResult
	for _, sc := range scs {
		reps := o.Reps
		if sc.Soak {
			reps = 1
		}
		for rep := range reps {
			// Alternate which system goes first, so drift on a noisy
			// machine does not always favour the same one.
			systems := slices.Clone(sc.Systems)
			if rep%2 == 1 {
				slices.Reverse(systems)
			}
			for _, sys := range systems {
				if err := ctx.Err(); err != nil {
					return out, err
				}
				r, err := e.runOnce(ctx, sc, sys, rep)
				if err != nil {
					return out, fmt.Errorf("%s/%s/%d: %w", sc.Name, sys, rep, err)
				}
				e.logf("%-10s %-10s rep %d: %8.0f ev/s  p50 %6.1f ms  p99 %7.1f ms  max gap %6.1f ms  cpu %.2fs  allocs/ev %.0f  B/ev %.0f  rss %.0f MiB%s",
					sc.Name, sys, rep, r.Rate, r.P50*1e3, r.P99*1e3, r.MaxGap*1e3, r.WorkerCPU,
					float64(r.Allocs)/float64(max(r.Events, 1)), float64(r.AllocBytes)/float64(max(r.Events, 1)),
					float64(r.PeakRSS)/(1<<20), map[bool]string{true: "  TIMED OUT"}[r.TimedOut])
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func (e *env) resetStreams(ctx context.Context, soak bool, inFlight int) error {
	for _, name := range []string{streamName, deadletter.DefaultStream} {
		if err := e.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
	}
	cfg := jetstream.StreamConfig{Name: streamName, Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage}
	if soak {
		// Settled messages are dropped from the head; the publisher never
		// gets this far ahead of the worker.
		cfg.MaxMsgs = int64(10 * inFlight)
	}
	for _, c := range []jetstream.StreamConfig{cfg, deadletter.Config{}.StreamConfig()} {
		// On a loaded machine the store of a stream just deleted may
		// still be going away: try a few times.
		var err error
		for attempt := 0; attempt < 10; attempt++ {
			if _, err = e.js.CreateStream(ctx, c); err == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// event returns the i-th event of run: the API's JSON body with a
// producer-set message id, or (when poison) a truncated body.
func event(run, i int, poison bool) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(jetstream.MsgIDHeader, "r"+strconv.Itoa(run)+"-"+strconv.Itoa(i))
	if poison {
		m.Data = []byte(`{"input":"Summarise ticket ` + strconv.Itoa(i))
		return m
	}
	m.Data = []byte(`{"input":"Summarise ticket ` + strconv.Itoa(i) +
		`: the customer reports that exports of the quarterly report time out after two minutes and asks for a workaround.","conversation_key":"conv-` +
		strconv.Itoa(i%1000) + `"}`)
	return m
}

// publishAsync publishes without waiting for the ack, waiting for earlier
// acks when too many are outstanding.
func (e *env) publishAsync(ctx context.Context, m *nats.Msg) error {
	for {
		_, err := e.js.PublishMsgAsync(m)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return err
		}
		select {
		case <-e.js.PublishAsyncComplete():
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// publish publishes events [from, to) of run.
func (e *env) publish(ctx context.Context, sc Scenario, run, from, to int) error {
	for i := from; i < to; i++ {
		poison := sc.PoisonEvery > 0 && i%sc.PoisonEvery == sc.PoisonEvery/2
		if err := e.publishAsync(ctx, event(run, i, poison)); err != nil {
			return err
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("publishing: no acks within 30s")
	}
}

// workerHandle is a running worker, as a child process or a goroutine.
type workerHandle struct {
	in    io.WriteCloser
	lines chan map[string]json.RawMessage
	wait  func() error
}

func (e *env) startWorker(cfg WorkerConfig) (*workerHandle, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	h := &workerHandle{lines: make(chan map[string]json.RawMessage, 1024)}
	var out io.Reader
	if e.o.InProcess {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := RunWorker(cfg, inR, outW)
			_ = outW.Close()
			done <- err
		}()
		h.in, out = inW, outR
		h.wait = func() error { return <-done }
	} else {
		cmd := exec.Command(e.o.Executable, "worker", "-config", string(b))
		cmd.Stderr = os.Stderr
		if h.in, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		out = stdout
		h.wait = cmd.Wait
	}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			var m map[string]json.RawMessage
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				h.lines <- m
			}
		}
	}()
	return h, nil
}

// next returns the next line of the given type, skipping others.
func (h *workerHandle) next(typ string, timeout time.Duration) (map[string]json.RawMessage, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case m, ok := <-h.lines:
			if !ok {
				return nil, fmt.Errorf("worker exited before %q", typ)
			}
			var got string
			_ = json.Unmarshal(m["type"], &got)
			if got == "result" && typ != "result" {
				var r WorkerResult
				_ = json.Unmarshal(m["result"], &r)
				return nil, fmt.Errorf("worker failed: %s", r.Error)
			}
			if got == typ {
				return m, nil
			}
		case <-t.C:
			return nil, fmt.Errorf("no %q from worker within %v", typ, timeout)
		}
	}
}

// runOnce measures one repetition of sc against sys. Its phases are the
// functions below, in order: prepareRun (a clean emulator, streams and ack
// monitor, and the backlog), startReplicas, driveLoad (start, publish, wait
// for the last ack), collectWorkerResults and summarizeRun. The deferred
// clean-ups run in reverse: publishing stops, then the workers, then the
// monitor.
func (e *env) runOnce(ctx context.Context, sc Scenario, sys System, rep int) (RunResult, error) {
	e.runSeq++
	run := e.runSeq
	n := int(float64(sc.Events) * e.o.Scale)
	if sc.Soak {
		n = 0
	}
	res := RunResult{Scenario: sc.Name, System: sys, Rep: rep}

	mon, err := e.prepareRun(ctx, sc, run, rep, n)
	if err != nil {
		return res, err
	}
	defer mon.stop()
	hs, err := e.startReplicas(sc, sys, rep)
	if err != nil {
		return res, err
	}
	defer stopWorkers(hs)
	t0, err := e.driveLoad(ctx, sc, run, n, mon, hs, &res)
	if err != nil {
		return res, err
	}
	if err := collectWorkerResults(hs, &res); err != nil {
		return res, err
	}
	e.summarizeRun(&res, mon.stats(), sc, n, t0)
	return res, nil
}

// prepareRun gives the run a clean emulator (its faults seeded by the
// repetition, so repetitions differ but reruns repeat), fresh streams and an
// ack monitor that expects n events. An unpaced, finite scenario has its
// whole backlog published before the workers start. The caller stops the
// monitor.
func (e *env) prepareRun(ctx context.Context, sc Scenario, run, rep, n int) (*ackMonitor, error) {
	e.emu.Reset()
	e.emu.SetFaults(emulator.Faults{Latency: sc.Latency, ServerErrorRate: sc.ServerErrorRate, Seed: int64(rep + 1)})
	if err := e.resetStreams(ctx, sc.Soak, sc.InFlight); err != nil {
		return nil, err
	}
	mon, err := newAckMonitor(e.mon, streamName, n, !sc.Soak)
	if err != nil {
		return nil, err
	}
	if sc.Rate == 0 && !sc.Soak {
		if err := e.publish(ctx, sc, run, 0, n); err != nil {
			mon.stop()
			return nil, err
		}
	}
	return mon, nil
}

// workerConfig is the configuration every replica of sys gets in scenario sc.
func (e *env) workerConfig(sc Scenario, sys System) WorkerConfig {
	callTimeout := 10 * time.Second
	cfg := WorkerConfig{
		System: sys, NATSURL: e.ns.ClientURL(), APIURL: e.api.URL,
		Stream: streamName, Subject: subject, Durable: durable, TriggerID: triggerID, Token: token,
		InFlight: sc.InFlight, MaxAckPending: sc.InFlight * sc.Replicas,
		AckWait: 60 * time.Second, CallTimeout: callTimeout,
		InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, MaxAttempts: 10,
		// 10 % random 503s must not open the breaker (5 in a row happen
		// every ~100,000 calls); an outage still would.
		BreakerFailures: 10,
		SampleEvery:     250 * time.Millisecond,
		InProcess:       e.o.InProcess,
		Ordered:         sc.Ordered,
	}
	if sc.Soak {
		cfg.SampleEvery = time.Second
	}
	if sc.HTTPS {
		cfg.APIURL, cfg.CAPEM = e.apiTLS.URL, e.apiTLS.CAPEM
	}
	return cfg
}

// startReplicas starts sc.Replicas workers of sys and waits until each is
// ready. Only the first replica of the first repetition is profiled: one
// profile per scenario and system. If any worker fails to start or
// get ready, those already started are stopped.
func (e *env) startReplicas(sc Scenario, sys System, rep int) (hs []*workerHandle, err error) {
	defer func() {
		if err != nil {
			stopWorkers(hs)
		}
	}()
	cfg := e.workerConfig(sc, sys)
	for i := range sc.Replicas {
		c := cfg
		if e.o.ProfileDir != "" && rep == 0 && i == 0 {
			c.CPUProfile = filepath.Join(e.o.ProfileDir, fmt.Sprintf("%s-%s.cpu.pprof", sc.Name, sys))
			c.MemProfile = filepath.Join(e.o.ProfileDir, fmt.Sprintf("%s-%s.allocs.pprof", sc.Name, sys))
		}
		h, err := e.startWorker(c)
		if err != nil {
			return hs, err
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		if _, err := h.next("ready", 30*time.Second); err != nil {
			return hs, err
		}
	}
	return hs, nil
}

// stopWorkers closes each worker's input, which ends it, and waits for it.
func stopWorkers(hs []*workerHandle) {
	for _, h := range hs {
		_ = h.in.Close()
		_ = h.wait()
	}
}

// driveLoad tells the workers to go and publishes what the scenario still
// has to publish (paced, or topped up for a soak) until every event is acked,
// the soak time is up, or the run times out (res.TimedOut). It records the
// parent's CPU time in res.ParentCPU and returns when the load began.
func (e *env) driveLoad(ctx context.Context, sc Scenario, run, n int, mon *ackMonitor, hs []*workerHandle, res *RunResult) (t0 time.Time, err error) {
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pubDone := make(chan error, 1)
	cpu0 := cpuSeconds()
	t0 = time.Now()
	for _, h := range hs {
		if _, err := io.WriteString(h.in, "go\n"); err != nil {
			return t0, err
		}
	}
	switch {
	case sc.Soak:
		go func() { pubDone <- e.topUp(pubCtx, sc, run, mon) }()
	case sc.Rate > 0:
		go func() { pubDone <- e.paced(pubCtx, sc, run, n, t0) }()
	default:
		pubDone <- nil
	}

	timeout := 120 * time.Second
	if ideal := sc.Ideal(); ideal > 0 {
		timeout = max(timeout, time.Duration(float64(n)/ideal*10*float64(time.Second)))
	}
	if sc.Soak {
		select {
		case <-time.After(e.o.Soak):
		case <-ctx.Done():
		}
	} else {
		select {
		case <-mon.done:
		case <-time.After(timeout):
			res.TimedOut = true
		case <-ctx.Done():
			return t0, ctx.Err()
		}
	}
	stopPub()
	if err := <-pubDone; err != nil && !errors.Is(err, context.Canceled) {
		return t0, err
	}
	res.ParentCPU = cpuSeconds() - cpu0
	return t0, nil
}

// collectWorkerResults tells the workers to stop and adds up what each
// reports: its results, CPU time, allocations and peak memory.
func collectWorkerResults(hs []*workerHandle, res *RunResult) error {
	for _, h := range hs {
		_, _ = io.WriteString(h.in, "stop\n")
	}
	for _, h := range hs {
		m, err := h.next("result", 60*time.Second)
		if err != nil {
			return err
		}
		var wr WorkerResult
		if err := json.Unmarshal(m["result"], &wr); err != nil {
			return err
		}
		if wr.Error != "" {
			return errors.New(wr.Error)
		}
		res.Workers = append(res.Workers, wr)
		res.WorkerCPU += wr.CPUSeconds
		res.Allocs += wr.Allocs
		res.AllocBytes += wr.AllocBytes
		res.PeakRSS += wr.PeakRSS
		res.PeakLive += wr.PeakLive
	}
	return nil
}

// summarizeRun fills res with what the ack monitor saw of the run that
// began at t0: events, elapsed time and rate, latencies, and the naks, terms,
// duplicates and replays.
func (e *env) summarizeRun(res *RunResult, st ackStats, sc Scenario, n int, t0 time.Time) {
	res.Events = st.Final
	start := t0
	if !st.Last.IsZero() {
		res.Seconds = st.Last.Sub(start).Seconds()
	}
	if sc.Soak {
		res.Seconds = e.o.Soak.Seconds()
	}
	if res.Seconds > 0 {
		res.Rate = float64(st.Final) / res.Seconds
	}
	if sc.Rate99 && !st.At99.IsZero() {
		// Retries leave a tail of a few messages that fail several
		// times in a row, each waiting out its backoff: the time to the
		// last one says more about the dice than about the worker.
		res.Seconds = st.At99.Sub(start).Seconds()
		res.Rate = float64(n*99/100) / res.Seconds
	}
	res.P50, res.P99, res.Max = st.P50, st.P99, st.Max
	res.MaxGap = st.MaxGap.Seconds()
	res.Naks, res.Terms, res.Dups = st.Naks, st.Terms, st.Dups
	res.Replays = e.emu.Stats().Replays
}

// paced publishes n events at sc.Rate per second from t0.
func (e *env) paced(ctx context.Context, sc Scenario, run, n int, t0 time.Time) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for sent < n {
		due := min(n, int(time.Since(t0).Seconds()*sc.Rate)+1)
		if due > sent {
			for i := sent; i < due; i++ {
				poison := sc.PoisonEvery > 0 && i%sc.PoisonEvery == sc.PoisonEvery/2
				if err := e.publishAsync(ctx, event(run, i, poison)); err != nil {
					return err
				}
			}
			sent = due
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// topUp keeps the stream holding about twice the worker's in-flight limit
// of unsettled events, until ctx ends. The emulator's ledger and key map are
// cleared every 10s so the emulator's memory stays flat too.
func (e *env) topUp(ctx context.Context, sc Scenario, run int, mon *ackMonitor) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	lastReset := time.Now()
	sent := 0
	for {
		mon.mu.Lock()
		settled := mon.final
		mon.mu.Unlock()
		want := settled + 2*sc.InFlight*sc.Replicas
		for ; sent < want; sent++ {
			if err := e.publishAsync(ctx, event(run, sent, false)); err != nil {
				return err
			}
		}
		if time.Since(lastReset) > 10*time.Second {
			e.emu.Reset()
			lastReset = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
