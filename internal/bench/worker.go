package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// System names a thing under test.
type System string

// Systems.
const (
	// Reference is the bare loop on nats.go's jetstream package.
	Reference System = "reference"
	// Relay is agentrelay's consumer package, with metrics and logging on.
	Relay System = "agentrelay"
)

// WorkerConfig is what one worker process (or goroutine, in tests) runs.
type WorkerConfig struct {
	System  System `json:"system"`
	NATSURL string `json:"nats_url"`
	APIURL  string `json:"api_url"`
	// CAPEM, when set, is the API's certificate (HTTPS with HTTP/2).
	CAPEM         string        `json:"ca_pem,omitempty"`
	Stream        string        `json:"stream"`
	Subject       string        `json:"subject"`
	Durable       string        `json:"durable"`
	TriggerID     string        `json:"trigger_id"`
	Token         string        `json:"token"`
	InFlight      int           `json:"in_flight"`
	MaxAckPending int           `json:"max_ack_pending"`
	AckWait       time.Duration `json:"ack_wait"`
	CallTimeout   time.Duration `json:"call_timeout"`
	// Retry policy (short backoffs so retries come back within the run).
	InitialBackoff time.Duration `json:"initial_backoff"`
	MaxBackoff     time.Duration `json:"max_backoff"`
	MaxAttempts    int           `json:"max_attempts"`
	// BreakerFailures is the breaker's consecutive-failure threshold.
	BreakerFailures uint32 `json:"breaker_failures"`
	// Ordered orders agentrelay's route by conversation key.
	Ordered bool `json:"ordered,omitempty"`
	// SampleEvery is how often memory and goroutines are sampled.
	SampleEvery time.Duration `json:"sample_every"`
	// CPUProfile and MemProfile, when set, are written for the measured
	// window (between "go" and "stop").
	CPUProfile string `json:"cpu_profile,omitempty"`
	MemProfile string `json:"mem_profile,omitempty"`
	// InProcess: the worker shares its process (tests); skip what only
	// means something in a process of its own.
	InProcess bool `json:"in_process,omitempty"`
}

// Sample is one reading of a worker's memory.
type Sample struct {
	T          float64 `json:"t"`           // seconds since "go"
	LiveHeap   uint64  `json:"live_heap"`   // heap marked live by the last GC
	HeapInUse  uint64  `json:"heap_in_use"` // heap objects, live or not yet swept
	Stacks     uint64  `json:"stacks"`      // goroutine stacks
	RSS        uint64  `json:"rss"`
	Goroutines int     `json:"goroutines"`
	InFlight   int     `json:"in_flight"`
}

// WorkerResult is what a worker reports when it stops.
type WorkerResult struct {
	System     System  `json:"system"`
	CPUSeconds float64 `json:"cpu_seconds"` // user+system, measured window
	Allocs     uint64  `json:"allocs"`      // heap objects allocated, measured window
	AllocBytes uint64  `json:"alloc_bytes"`
	GCs        uint64  `json:"gcs"`
	PeakRSS    uint64  `json:"peak_rss"` // VmHWM, whole life
	PeakLive   uint64  `json:"peak_live_heap"`
	PeakInUse  uint64  `json:"peak_heap_in_use"`
	PeakGor    int     `json:"peak_goroutines"`
	// Idle is a reading after set-up, before "go", after a forced GC.
	Idle Sample `json:"idle"`
	// Samples are every reading of the measured window.
	Samples []Sample `json:"samples"`
	// GoroutinesAfter is the goroutine count after the worker drained and
	// closed its connections (compare with GoroutinesBefore).
	GoroutinesBefore int    `json:"goroutines_before"`
	GoroutinesAfter  int    `json:"goroutines_after"`
	Error            string `json:"error,omitempty"`
}

// worker is one system under test inside a worker.
type worker interface {
	start() error // begin consuming
	stop()        // drain and return when done
	inFlight() int
}

// RunWorker runs one worker: it connects and sets up, writes "ready", starts
// on "go", stops and drains on "stop" (or end of input), and writes its
// result as one JSON line.
func RunWorker(cfg WorkerConfig, in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	res := WorkerResult{System: cfg.System}
	fail := func(err error) error {
		res.Error = err.Error()
		_ = enc.Encode(map[string]any{"type": "result", "result": res})
		return err
	}
	res.GoroutinesBefore = runtime.NumGoroutine()
	nc, w, err := connectWorker(cfg)
	if err != nil {
		return fail(err)
	}
	lines := readLines(in)

	if !cfg.InProcess {
		runtime.GC()
	}
	res.Idle = readSample(0, w.inFlight())
	_ = enc.Encode(map[string]any{"type": "ready"})
	if l, ok := <-lines; !ok || l != "go" {
		w.stop()
		nc.Close()
		return fail(errors.New("stopped before go"))
	}

	// The measured window: from "go" to "stop".
	cpuf, err := startProfiles(cfg)
	if err != nil {
		return fail(err)
	}
	t0 := time.Now()
	cpu0 := cpuSeconds()
	m0 := readCounters()
	if err := w.start(); err != nil {
		return fail(err)
	}
	stopSampling := sampleWhileRunning(enc, w, t0, cfg.SampleEvery)
	for l := range lines {
		if l == "stop" {
			break
		}
	}
	res.Samples = stopSampling()
	res.CPUSeconds = cpuSeconds() - cpu0
	m1 := readCounters()
	res.Allocs = m1.allocs - m0.allocs
	res.AllocBytes = m1.allocBytes - m0.allocBytes
	res.GCs = m1.gcs - m0.gcs
	stopProfiles(cfg, cpuf)
	for _, s := range res.Samples {
		res.PeakLive = max(res.PeakLive, s.LiveHeap)
		res.PeakInUse = max(res.PeakInUse, s.HeapInUse)
		res.PeakGor = max(res.PeakGor, s.Goroutines)
	}

	w.stop()
	nc.Close()
	if !cfg.InProcess {
		awaitGoroutines(res.GoroutinesBefore+1, 3*time.Second)
	}
	res.GoroutinesAfter = runtime.NumGoroutine()
	res.PeakRSS = procStatus("VmHWM")
	return enc.Encode(map[string]any{"type": "result", "result": res})
}

// connectWorker connects to NATS and sets up the system under test. On an
// error nothing is left open.
func connectWorker(cfg WorkerConfig) (*nats.Conn, worker, error) {
	nc, err := nats.Connect(cfg.NATSURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	var w worker
	switch cfg.System {
	case Reference:
		w, err = newRefWorker(cfg, js)
	case Relay:
		w, err = newRelayWorker(cfg, js)
	default:
		err = fmt.Errorf("unknown system %q", cfg.System)
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, w, nil
}

// readLines delivers the input's lines, trimmed, until the input ends; then
// it closes the channel.
func readLines(in io.Reader) <-chan string {
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	return lines
}

// startProfiles starts the CPU profile and raises the memory profile rate
// if the configuration asks for them. stopProfiles ends them.
func startProfiles(cfg WorkerConfig) (cpuf *os.File, err error) {
	if cfg.CPUProfile != "" {
		if cpuf, err = os.Create(cfg.CPUProfile); err == nil {
			err = pprof.StartCPUProfile(cpuf)
		}
		if err != nil {
			return cpuf, err
		}
	}
	if cfg.MemProfile != "" {
		runtime.MemProfileRate = 64 << 10
	}
	return cpuf, nil
}

// stopProfiles stops the CPU profile (cpuf, if any) and writes the
// allocation profile if the configuration asks for one. A profile that
// cannot be written is skipped: it does not spoil the measurement.
func stopProfiles(cfg WorkerConfig, cpuf *os.File) {
	if cpuf != nil {
		pprof.StopCPUProfile()
		_ = cpuf.Close()
	}
	if cfg.MemProfile != "" {
		if f, err := os.Create(cfg.MemProfile); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(f, 0)
			_ = f.Close()
		}
	}
}

// sampleWhileRunning reads a Sample every period (250 ms if not positive),
// timed from t0, and writes each as a "sample" line. The returned function
// stops the sampling and returns the samples read.
func sampleWhileRunning(enc *json.Encoder, w worker, t0 time.Time, every time.Duration) (stop func() []Sample) {
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	var samples []Sample
	sampleStop := make(chan struct{})
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-sampleStop:
				return
			case <-t.C:
			}
			s := readSample(time.Since(t0).Seconds(), w.inFlight())
			samples = append(samples, s)
			_ = enc.Encode(map[string]any{"type": "sample", "sample": s})
		}
	}()
	return func() []Sample {
		close(sampleStop)
		<-sampleDone // samples is the goroutine's until it is done
		return samples
	}
}

// awaitGoroutines lets the closed connection's goroutines and idle HTTP
// connections go: it waits, up to timeout, until at most n goroutines run.
func awaitGoroutines(n int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for runtime.NumGoroutine() > n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

type counters struct{ allocs, allocBytes, gcs uint64 }

var counterNames = []string{"/gc/heap/allocs:objects", "/gc/heap/allocs:bytes", "/gc/cycles/total:gc-cycles"}

func readCounters() counters {
	s := make([]metrics.Sample, len(counterNames))
	for i, n := range counterNames {
		s[i].Name = n
	}
	metrics.Read(s)
	return counters{s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()}
}

var sampleNames = []string{"/gc/heap/live:bytes", "/memory/classes/heap/objects:bytes", "/memory/classes/heap/stacks:bytes", "/sched/goroutines:goroutines"}

func readSample(t float64, inFlight int) Sample {
	s := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		s[i].Name = n
	}
	metrics.Read(s)
	return Sample{
		T: t, LiveHeap: s[0].Value.Uint64(), HeapInUse: s[1].Value.Uint64(), Stacks: s[2].Value.Uint64(),
		Goroutines: int(s[3].Value.Uint64()), RSS: procStatus("VmRSS"), InFlight: inFlight,
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// procStatus reads a "kB" field of /proc/self/status, in bytes.
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// ---------------------------------------------------------------------------
// The bare reference.

// refWorker is the simplest correct loop on nats.go's jetstream package: a
// Messages iterator sized to the concurrency, a goroutine per message under
// a semaphore, POST with the Idempotency-Key, ack. The same dead-letter and
// retry duties as agentrelay for scenario (d), done plainly: an invalid JSON
// body is copied to the dead-letter stream (publish ack awaited) and
// terminated; a 5xx, 429 or network error is nak'ed with a short delay.
type refWorker struct {
	cfg  WorkerConfig
	js   jetstream.JetStream
	cons jetstream.Consumer
	hc   *http.Client
	url  string
	auth string
	it   jetstream.MessagesContext
	sem  chan struct{}
	done chan struct{}
	n    atomic.Int64
}

func newRefWorker(cfg WorkerConfig, js jetstream.JetStream) (*refWorker, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: cfg.MaxAckPending,
		FilterSubject: cfg.Subject,
	})
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		MaxIdleConns:        cfg.InFlight,
		MaxIdleConnsPerHost: cfg.InFlight,
		IdleConnTimeout:     90 * time.Second,
	}
	if cfg.CAPEM != "" {
		if tr.TLSClientConfig, err = clientTLS(cfg.CAPEM); err != nil {
			return nil, err
		}
		tr.ForceAttemptHTTP2 = true
	}
	return &refWorker{
		cfg:  cfg,
		js:   js,
		cons: cons,
		hc:   &http.Client{Timeout: cfg.CallTimeout, Transport: tr},
		url:  cfg.APIURL + "/v1/workspace_agents/" + cfg.TriggerID + "/trigger",
		auth: "Bearer " + cfg.Token,
		sem:  make(chan struct{}, cfg.InFlight),
		done: make(chan struct{}),
	}, nil
}

func (r *refWorker) inFlight() int { return int(r.n.Load()) }

func (r *refWorker) start() error {
	it, err := r.cons.Messages(
		jetstream.PullMaxMessages(r.cfg.InFlight),
		jetstream.PullExpiry(5*time.Second),
		jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return err
	}
	r.it = it
	go func() {
		defer close(r.done)
		for {
			msg, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				continue // missed heartbeat and the like: the iterator re-pulls
			}
			r.sem <- struct{}{}
			r.n.Add(1)
			go func() {
				defer func() { r.n.Add(-1); <-r.sem }()
				r.handle(msg)
			}()
		}
	}()
	return nil
}

func (r *refWorker) stop() {
	if r.it == nil {
		return
	}
	r.it.Drain()
	<-r.done
	for range cap(r.sem) {
		r.sem <- struct{}{}
	}
	r.hc.CloseIdleConnections()
}

func (r *refWorker) backoff(msg jetstream.Msg) time.Duration {
	d := r.cfg.InitialBackoff
	if md, err := msg.Metadata(); err == nil {
		for i := uint64(1); i < md.NumDelivered && d < r.cfg.MaxBackoff; i++ {
			d *= 2
		}
	}
	return min(d, r.cfg.MaxBackoff)
}

func (r *refWorker) handle(msg jetstream.Msg) {
	data := msg.Data()
	if !json.Valid(data) {
		r.deadLetter(msg, "invalid_json")
		return
	}
	req, err := http.NewRequest(http.MethodPost, r.url, bytes.NewReader(data))
	if err != nil {
		_ = msg.Nak()
		return
	}
	req.Header.Set("Authorization", r.auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", msg.Headers().Get(jetstream.MsgIDHeader))
	resp, err := r.hc.Do(req)
	if err != nil {
		_ = msg.NakWithDelay(r.backoff(msg))
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		_ = msg.Ack()
	case resp.StatusCode >= 500, resp.StatusCode == 429, resp.StatusCode == 409, resp.StatusCode == 401:
		_ = msg.NakWithDelay(r.backoff(msg))
	default:
		r.deadLetter(msg, "rejected")
	}
}

func (r *refWorker) deadLetter(msg jetstream.Msg, reason string) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	out := &nats.Msg{Subject: deadletter.DefaultSubjectPrefix + "." + msg.Subject(), Data: msg.Data(), Header: nats.Header{}}
	out.Header.Set(deadletter.HeaderReason, reason)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.js.PublishMsg(ctx, out, jetstream.WithMsgID("ref:"+strconv.FormatUint(md.Sequence.Stream, 10))); err != nil {
		_ = msg.NakWithDelay(r.backoff(msg))
		return
	}
	_ = msg.TermWithReason(reason)
}

// ---------------------------------------------------------------------------
// agentrelay itself.

type relayWorker struct {
	relay         *consumer.Relay
	inFlightGauge prometheus.Collector
	client        *agentapi.Client
	cancel        context.CancelFunc
	done          chan error
}

func newRelayWorker(cfg WorkerConfig, js jetstream.JetStream) (*relayWorker, error) {
	// As in production: JSON logs at info (to a discarded writer), metrics
	// registered.
	logTo := io.Discard
	if os.Getenv("RELAYBENCH_WORKER_LOG") != "" {
		logTo = os.Stderr // debugging a run: the relay's own log
	}
	log, err := telemetry.NewLogger(logTo, slog.LevelInfo, "json")
	if err != nil {
		return nil, err
	}
	reg := &capture{Registerer: prometheus.NewRegistry()}
	client, agent, err := benchAgent(cfg)
	if err != nil {
		return nil, err
	}
	opts := consumer.Options{
		Logger:     log,
		Observer:   telemetry.NewMetrics(reg),
		DrainGrace: 10 * time.Second,
	}
	if cfg.InProcess {
		// A drain waits for outstanding pulls to expire: keep the
		// smoke test short.
		opts.PullHeartbeat, opts.PullExpiry = 500*time.Millisecond, 2*time.Second
	}
	relay, err := consumer.New(js, []consumer.Route{benchRoute(cfg, agent)}, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := relay.Setup(ctx); err != nil {
		return nil, err
	}
	return &relayWorker{
		relay:         relay,
		client:        client,
		inFlightGauge: reg.find("agentrelay_messages_in_flight"),
	}, nil
}

// benchAgent is the API client, sized for cfg.InFlight calls, and the
// trigger the relay calls through it.
func benchAgent(cfg WorkerConfig) (*agentapi.Client, *agentapi.Agent, error) {
	co := agentapi.ClientOptions{Timeout: cfg.CallTimeout, MaxConns: cfg.InFlight}
	if cfg.CAPEM != "" {
		var err error
		if co.TLS, err = clientTLS(cfg.CAPEM); err != nil {
			return nil, nil, err
		}
	}
	client, err := agentapi.NewClient(cfg.APIURL, co)
	if err != nil {
		return nil, nil, err
	}
	tid, err := agentapi.ParseTriggerID(cfg.TriggerID)
	if err != nil {
		return nil, nil, err
	}
	agent, err := client.Agent(tid, agentapi.StaticToken(agentapi.NewSecret(cfg.Token)))
	if err != nil {
		return nil, nil, err
	}
	return client, agent, nil
}

// benchRoute is the one route the relay runs: the benchmark's stream and
// durable, with the configured limits, retries and breaker.
func benchRoute(cfg WorkerConfig, agent *agentapi.Agent) consumer.Route {
	route := consumer.Route{
		Name:          "bench",
		Stream:        cfg.Stream,
		Subjects:      []string{cfg.Subject},
		Durable:       cfg.Durable,
		Agent:         agent,
		MaxInFlight:   cfg.InFlight,
		MaxAckPending: cfg.MaxAckPending,
		AckWait:       cfg.AckWait,
		Retry: consumer.RetryPolicy{
			MaxAttempts:    cfg.MaxAttempts,
			InitialBackoff: cfg.InitialBackoff,
			MaxBackoff:     cfg.MaxBackoff,
		},
		Breaker: consumer.BreakerSettings{MinCalls: cfg.BreakerFailures},
	}
	if cfg.Ordered {
		route.Ordering = consumer.OrderByConversationKey
	}
	return route
}

func (r *relayWorker) start() error {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan error, 1)
	go func() { r.done <- r.relay.Run(ctx) }()
	return nil
}

func (r *relayWorker) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.client.CloseIdleConnections()
}

// inFlight reads the relay's own in-flight gauge, collecting only that one
// metric (a full Gather would read MemStats, stopping the world).
func (r *relayWorker) inFlight() int {
	if r.inFlightGauge == nil {
		return 0
	}
	ch := make(chan prometheus.Metric, 16)
	go func() { r.inFlightGauge.Collect(ch); close(ch) }()
	n := 0.0
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) == nil {
			n += pb.GetGauge().GetValue()
		}
	}
	return int(n)
}

// capture keeps the collectors registered through it.
type capture struct {
	prometheus.Registerer
	cs []prometheus.Collector
}

func (c *capture) MustRegister(cs ...prometheus.Collector) {
	c.cs = append(c.cs, cs...)
	c.Registerer.MustRegister(cs...)
}

// find returns the last collector registered that describes the metric
// name, or nil.
func (c *capture) find(name string) prometheus.Collector {
	var found prometheus.Collector
	for _, col := range c.cs {
		descs := make(chan *prometheus.Desc, 64)
		col.Describe(descs)
		close(descs)
		for d := range descs {
			if strings.Contains(d.String(), `"`+name+`"`) {
				found = col
			}
		}
	}
	return found
}
