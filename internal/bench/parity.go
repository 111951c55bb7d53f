package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The parity bench (issue 21) measures agentrelay's release binary against
// the loop a user would write on nats.go alone (internal/bench/cmd/bareloop)
// the way an outsider would: every part a process of its own, built from
// this repository. nats-server (the version go.mod names, file store), an
// API that answers 202 after a fixed delay (cmd/benchapi), the worker under
// test, and the plain-HTTP ceiling (cmd/httpceiling: the same API, no NATS)
// in the same rounds. The parent publishes, watches the consumer and reads
// each worker's CPU and memory from /proc; it is not measured.

// Worker systems and the ceiling of the parity bench.
const (
	SysBare    = "bare loop"
	SysRelay   = "agentrelay"
	SysCeiling = "ceiling"
)

// ParityScenario is one setting of the parity bench.
type ParityScenario struct {
	Name     string
	Latency  time.Duration
	InFlight int // the bare loop's semaphore and agentrelay's max_in_flight
}

// ParityScenarios are issue 21's two.
func ParityScenarios() []ParityScenario {
	return []ParityScenario{
		{Name: "50 ms API, 256 in flight", Latency: 50 * time.Millisecond, InFlight: 256},
		{Name: "0 ms API, 64 in flight", Latency: 0, InFlight: 64},
	}
}

// ParityOptions configure RunParity.
type ParityOptions struct {
	// BinDir holds the programs: agentrelay (the release build),
	// bareloop, benchapi, httpceiling and nats-server; and, for Profile,
	// relayprof and bareloop-prof.
	BinDir string
	// Rounds, interleaved; medians are reported. Default 3.
	Rounds int
	// Events published before each worker starts. Default 20,000.
	Events int
	// IdleAfter is when idle RSS is read after a worker starts. Default 3s.
	IdleAfter time.Duration
	// Profile adds, after the rounds, one run of each worker's profiling
	// build in the first scenario: heap profiles at idle and under load.
	Profile bool
	// ProfileDir receives the profiles (default BinDir/../profiles).
	ProfileDir string
	// Parts to run: PartSideBySide, PartIdle, PartAgents; empty means all.
	Parts []string
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// ParityRun is one worker (or ceiling) run.
type ParityRun struct {
	Scenario string  `json:"scenario"`
	System   string  `json:"system"`
	Round    int     `json:"round"`
	Events   int     `json:"events"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"`
	CPU      float64 `json:"cpu_seconds"` // the worker's user+system CPU from start to drained
	PeakRSS  uint64  `json:"peak_rss"`    // VmHWM at drained
	// Calls and Keys are the API's count of calls and of distinct
	// Idempotency-Keys: Keys == Events means nothing was lost; Calls >
	// Keys, that some were sent more than once (a redelivery).
	Calls int `json:"calls"`
	Keys  int `json:"keys"`
}

// IdleRun is a worker's memory IdleAfter its start, with nothing to do.
type IdleRun struct {
	System string `json:"system"`
	Round  int    `json:"round"`
	RSS    uint64 `json:"rss"`
	Anon   uint64 `json:"anon"` // RSS of anonymous memory: heap, stacks, runtime
	File   uint64 `json:"file"` // RSS of the binary's pages (code and data read)
	// Ready is how long after the start the worker's durable consumer
	// existed on the server (polled every 5 ms): start-up, connection and
	// set-up.
	Ready float64 `json:"ready_seconds"`
	// Resident is where the RSS in the binary's own pages lies (when an
	// unstripped build NAME.syms is in BinDir).
	Resident *Resident `json:"resident,omitempty"`
}

// Parts of the parity bench, for ParityOptions.Parts.
const (
	PartSideBySide = "side-by-side" // issue 21's scenarios: ceiling, bare loop, agentrelay
	PartIdle       = "idle"         // each worker's idle memory
	PartAgents     = "agents"       // issue 20's many agents, one answering 409
)

// runs reports whether the options ask for part.
func (o ParityOptions) runs(part string) bool {
	return len(o.Parts) == 0 || slices.Contains(o.Parts, part)
}

// ParityResult is everything a parity bench run measured.
type ParityResult struct {
	Runs   []ParityRun `json:"runs"`
	Idle   []IdleRun   `json:"idle"`
	Agents []AgentsRun `json:"agents,omitempty"`
	Heaps  []HeapRun   `json:"heaps,omitempty"`
}

type parityEnv struct {
	o       ParityOptions
	dir     string
	nats    *exec.Cmd
	natsURL string
	nc      *nats.Conn
	js      jetstream.JetStream
	mon     *nats.Conn        // the ack monitor's own connection
	apis    map[string]string // apiKey → base URL
	apiCmds []*exec.Cmd
	seq     int
}

func (e *parityEnv) logf(format string, args ...any) {
	if e.o.Log != nil {
		fmt.Fprintf(e.o.Log, format+"\n", args...)
	}
}

func (e *parityEnv) bin(name string) string { return filepath.Join(e.o.BinDir, name) }

// RunParity runs the parity bench.
func RunParity(ctx context.Context, o ParityOptions) (ParityResult, error) {
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Events <= 0 {
		o.Events = 20000
	}
	if o.IdleAfter <= 0 {
		o.IdleAfter = 3 * time.Second
	}
	var res ParityResult
	for _, p := range o.Parts {
		if !slices.Contains([]string{PartSideBySide, PartIdle, PartAgents}, p) {
			return res, fmt.Errorf("unknown part %q (want %s, %s or %s)", p, PartSideBySide, PartIdle, PartAgents)
		}
	}
	dir, err := os.MkdirTemp("", "relaybench-parity-")
	if err != nil {
		return res, err
	}
	e := &parityEnv{o: o, dir: dir, apis: map[string]string{}}
	defer e.close()
	if err := e.start(ctx); err != nil {
		return res, err
	}
	scs := ParityScenarios()
	if !o.runs(PartSideBySide) {
		scs = nil
	}
	for round := range o.Rounds {
		for _, sc := range scs {
			// Interleaved: each round starts with a different system.
			systems := []string{SysCeiling, SysBare, SysRelay}
			for range round % 3 {
				systems = append(systems[1:], systems[0])
			}
			for _, sys := range systems {
				if err := ctx.Err(); err != nil {
					return res, err
				}
				r, err := e.run(ctx, sc, sys, round)
				if err != nil {
					return res, fmt.Errorf("%s, %s, round %d: %w", sc.Name, sys, round+1, err)
				}
				e.logf("round %d  %-26s %-10s %7.0f ev/s  %6.2f s  cpu %5.2f s  peak rss %5.1f MiB  calls %d keys %d",
					round+1, sc.Name, sys, r.Rate, r.Seconds, r.CPU, mibf(r.PeakRSS), r.Calls, r.Keys)
				res.Runs = append(res.Runs, r)
			}
		}
		ars, err := e.agentsRound(ctx, round)
		res.Agents = append(res.Agents, ars...)
		if err != nil {
			return res, err
		}
		for _, sys := range []string{SysBare, SysRelay} {
			if !o.runs(PartIdle) {
				break
			}
			ir, err := e.idle(ctx, sys, round)
			if err != nil {
				return res, fmt.Errorf("idle %s, round %d: %w", sys, round+1, err)
			}
			e.logf("round %d  idle %-10s rss %5.1f MiB (anon %5.1f, file %5.1f), consumer created %.0f ms after start",
				round+1, sys, mibf(ir.RSS), mibf(ir.Anon), mibf(ir.File), ir.Ready*1e3)
			res.Idle = append(res.Idle, ir)
		}
	}
	if o.Profile {
		hs, err := e.profile(ctx, ParityScenarios()[0])
		if err != nil {
			return res, fmt.Errorf("profiles: %w", err)
		}
		res.Heaps = hs
	}
	return res, nil
}

func (e *parityEnv) close() {
	if e.mon != nil {
		e.mon.Close()
	}
	if e.nc != nil {
		e.nc.Close()
	}
	for _, c := range append(e.apiCmds, e.nats) {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = c.Process.Kill()
				<-done
			}
		}
	}
	_ = os.RemoveAll(e.dir)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (e *parityEnv) logFile(name string) (*os.File, error) {
	return os.Create(filepath.Join(e.dir, name+".log"))
}

// start starts nats-server and the APIs and connects.
func (e *parityEnv) start(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	lf, err := e.logFile("nats-server")
	if err != nil {
		return err
	}
	e.nats = exec.Command(e.bin("nats-server"), "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(e.dir, "js"))
	e.nats.Stdout, e.nats.Stderr = lf, lf
	if err := e.nats.Start(); err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	e.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		e.nc, err = nats.Connect(e.natsURL)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server not reachable at %s: %w", e.natsURL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e.js, err = jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		return err
	}
	for {
		if _, err = e.js.AccountInfo(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("JetStream not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e.mon, err = nats.Connect(e.natsURL); err != nil {
		return err
	}
	for _, sc := range ParityScenarios() {
		if err := e.startAPI(sc.Latency); err != nil {
			return err
		}
	}
	for _, sc := range AgentsScenarios() {
		if err := e.startAPI(sc.Latency, sc.Conflicting...); err != nil {
			return err
		}
	}
	return nil
}

// apiKey names the API process with this latency and these trigger ids
// answered 409.
func apiKey(latency time.Duration, conflicting ...string) string {
	return latency.String() + " " + strings.Join(conflicting, ",")
}

// startAPI starts a benchapi process with this latency answering 409 for
// the conflicting trigger ids, unless one runs already.
func (e *parityEnv) startAPI(latency time.Duration, conflicting ...string) error {
	key := apiKey(latency, conflicting...)
	if _, ok := e.apis[key]; ok {
		return nil
	}
	args := []string{"-latency", latency.String()}
	if len(conflicting) > 0 {
		args = append(args, "-conflict", strings.Join(conflicting, ","))
	}
	cmd := exec.Command(e.bin("benchapi"), args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("benchapi: %w", err)
	}
	e.apiCmds = append(e.apiCmds, cmd)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("benchapi: no URL: %w", err)
	}
	e.apis[key] = strings.TrimSpace(line)
	return nil
}

const (
	parityStream  = "BENCH"
	paritySubject = "bench.events"
	parityTrigger = "agtch_bench"
	parityToken   = "tok-bench-7f3a"
)

// resetStream deletes and re-creates the stream (its consumers go with it)
// and publishes n events on paritySubject.
func (e *parityEnv) resetStream(ctx context.Context, n int) error {
	return e.resetStreamOn(ctx, n, nil)
}

// resetStreamOn is resetStream with the i-th event published on
// subject(i) (nil: paritySubject).
func (e *parityEnv) resetStreamOn(ctx context.Context, n int, subject func(i int) string) error {
	if err := e.js.DeleteStream(ctx, parityStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	var err error
	for range 20 {
		if _, err = e.js.CreateStream(ctx, jetstream.StreamConfig{Name: parityStream, Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage}); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	e.seq++
	for i := range n {
		m := event(e.seq, i, false)
		if subject != nil {
			m.Subject = subject(i)
		}
		if err := e.publish(ctx, m); err != nil {
			return err
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(60 * time.Second):
		return errors.New("publishing: no acks within 60s")
	}
	info, err := e.js.Stream(ctx, parityStream)
	if err != nil {
		return err
	}
	if got := info.CachedInfo().State.Msgs; got != uint64(n) {
		return fmt.Errorf("stream holds %d messages, want %d", got, n)
	}
	return nil
}

func (e *parityEnv) publish(ctx context.Context, m *nats.Msg) error {
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

func (e *parityEnv) apiReset(api string) error {
	resp, err := http.Post(api+"/reset", "", nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// apiCounts is what benchapi's GET /stats reports (see its doc).
type apiCounts struct {
	Calls     int                       `json:"calls"` // answered 202
	Keys      int                       `json:"keys"`  // distinct Idempotency-Keys of those
	InUse     int                       `json:"in_use"`
	Conflicts map[string]conflictCounts `json:"conflicts"`
}

// conflictCounts are the calls of one trigger id benchapi answers 409.
type conflictCounts struct {
	Calls             int       `json:"calls"`
	Keys              int       `json:"keys"`
	BeforeFirstAnswer int       `json:"before_first_answer"`
	FirstCall         time.Time `json:"first_call"`
	FirstAnswer       time.Time `json:"first_answer"`
	LastCall          time.Time `json:"last_call"`
}

func (e *parityEnv) apiStats(api string) (apiCounts, error) {
	var s apiCounts
	resp, err := http.Get(api + "/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("benchapi /stats: %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// workerCmd is the command line of a worker system, its durable and its
// environment.
func (e *parityEnv) workerCmd(sys string, sc ParityScenario, profiling bool) (*exec.Cmd, string, error) {
	api := e.apis[apiKey(sc.Latency)]
	switch sys {
	case SysBare:
		name := "bareloop"
		if profiling {
			name = "bareloop-prof"
		}
		return exec.Command(e.bin(name), "-nats", e.natsURL, "-stream", parityStream, "-subject", paritySubject,
			"-durable", "bareloop", "-api", api, "-trigger", parityTrigger, "-token", parityToken,
			"-in-flight", strconv.Itoa(sc.InFlight)), "bareloop", nil
	case SysRelay:
		cfg, err := e.relayConfig(api, sc.InFlight)
		if err != nil {
			return nil, "", err
		}
		name := "agentrelay"
		if profiling {
			name = "relayprof"
		}
		return exec.Command(e.bin(name), "run", "--config", cfg), "agentrelay-bench", nil
	}
	return nil, "", fmt.Errorf("unknown system %q", sys)
}

// relayConfig writes agentrelay's configuration: one route, max_in_flight
// as the scenario says, everything else at its defaults but the
// addresses (and /metrics on a free port, not :9090).
func (e *parityEnv) relayConfig(api string, inFlight int) (string, error) {
	tok := filepath.Join(e.dir, "token")
	if err := os.WriteFile(tok, []byte(parityToken+"\n"), 0o600); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`nats:
  url: %s
api:
  base_url: %s
metrics:
  listen: 127.0.0.1:0
routes:
  - name: bench
    stream: %s
    subjects: [%s]
    trigger_id: %s
    token:
      file: %s
    max_in_flight: %d
`, e.natsURL, api, parityStream, paritySubject, parityTrigger, tok, inFlight)
	path := filepath.Join(e.dir, fmt.Sprintf("agentrelay-%d.yaml", inFlight))
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// stopProc sends SIGTERM and waits for the exit (killing after 30s).
func stopProc(cmd *exec.Cmd) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return errors.New("did not exit within 30s of SIGTERM")
	}
}

// run runs one system in one scenario: publish, start, wait until the
// consumer has nothing pending or ack-pending, read the worker's CPU and
// peak RSS, stop it.
func (e *parityEnv) run(ctx context.Context, sc ParityScenario, sys string, round int) (ParityRun, error) {
	r := ParityRun{Scenario: sc.Name, System: sys, Round: round, Events: e.o.Events}
	api := e.apis[apiKey(sc.Latency)]
	if err := e.apiReset(api); err != nil {
		return r, err
	}
	if sys == SysCeiling {
		out, err := exec.CommandContext(ctx, e.bin("httpceiling"), "-url", api, "-n", strconv.Itoa(e.o.Events),
			"-c", strconv.Itoa(sc.InFlight), "-json").Output()
		if err != nil {
			return r, fmt.Errorf("httpceiling: %w", err)
		}
		var c struct{ Seconds, Rate float64 }
		if err := json.Unmarshal(out, &c); err != nil {
			return r, fmt.Errorf("httpceiling: %w: %s", err, out)
		}
		r.Seconds, r.Rate = c.Seconds, c.Rate
		s, _ := e.apiStats(api)
		r.Calls, r.Keys = s.Calls, s.Keys
		return r, nil
	}
	if err := e.resetStream(ctx, e.o.Events); err != nil {
		return r, err
	}
	cmd, durable, err := e.workerCmd(sys, sc, false)
	if err != nil {
		return r, err
	}
	lf, err := e.logFile(fmt.Sprintf("%s-%d-%d", strings.ReplaceAll(sys, " ", ""), sc.InFlight, round))
	if err != nil {
		return r, err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	pid := cmd.Process.Pid
	t1, err := e.waitDrained(ctx, durable, uint64(e.o.Events), 180*time.Second)
	cpu := procCPU(pid)
	peak := procStatusOf(pid, "VmHWM")
	stopErr := stopProc(cmd)
	if err != nil {
		return r, fmt.Errorf("%w (log: %s)", err, lastLine(readFile(lf.Name())))
	}
	if stopErr != nil && !isSIGTERMExit(stopErr) {
		return r, fmt.Errorf("stopping: %w (log: %s)", stopErr, lastLine(readFile(lf.Name())))
	}
	r.Seconds = t1.Sub(t0).Seconds()
	r.Rate = float64(e.o.Events) / r.Seconds
	r.CPU, r.PeakRSS = cpu, peak
	s, err := e.apiStats(api)
	if err != nil {
		return r, err
	}
	r.Calls, r.Keys = s.Calls, s.Keys
	if r.Keys != e.o.Events {
		return r, fmt.Errorf("the API saw %d distinct events, want %d", r.Keys, e.o.Events)
	}
	return r, nil
}

// isSIGTERMExit: a worker that exits on SIGTERM without a handler (none
// here does) would show as killed by the signal.
func isSIGTERMExit(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return true
		}
	}
	return false
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// waitDrained polls the consumer until it has delivered all n messages and
// has nothing pending or ack-pending, and returns when it saw that.
func (e *parityEnv) waitDrained(ctx context.Context, durable string, n uint64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("consumer %s not drained within %v", durable, timeout)
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := e.js.Consumer(qctx, parityStream, durable)
		cancel()
		if err != nil {
			continue // not created yet
		}
		ci := c.CachedInfo()
		if ci.NumPending == 0 && ci.NumAckPending == 0 && ci.AckFloor.Stream >= n {
			return time.Now(), nil
		}
	}
}

// idle starts a worker on an empty stream and reads its memory after
// IdleAfter.
func (e *parityEnv) idle(ctx context.Context, sys string, round int) (IdleRun, error) {
	ir := IdleRun{System: sys, Round: round}
	if err := e.resetStream(ctx, 0); err != nil {
		return ir, err
	}
	cmd, durable, err := e.workerCmd(sys, ParityScenarios()[0], false)
	if err != nil {
		return ir, err
	}
	lf, err := e.logFile(fmt.Sprintf("idle-%s-%d", strings.ReplaceAll(sys, " ", ""), round))
	if err != nil {
		return ir, err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return ir, err
	}
	for time.Since(t0) < e.o.IdleAfter && ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := e.js.Consumer(qctx, parityStream, durable)
		cancel()
		if err == nil {
			ir.Ready = time.Since(t0).Seconds()
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-time.After(time.Until(t0.Add(e.o.IdleAfter))):
	case <-ctx.Done():
	}
	ir.RSS = procStatusOf(cmd.Process.Pid, "VmRSS")
	ir.Anon = procStatusOf(cmd.Process.Pid, "RssAnon")
	ir.File = procStatusOf(cmd.Process.Pid, "RssFile")
	syms := e.bin(filepath.Base(cmd.Path) + ".syms")
	if _, err := os.Stat(syms); err == nil {
		goCmd := os.Getenv("GO")
		if goCmd == "" {
			goCmd = "go"
		}
		r, err := ResidentByModule(ctx, goCmd, cmd.Process.Pid, syms)
		if err != nil {
			return ir, fmt.Errorf("resident pages: %w", err)
		}
		ir.Resident = &r
	}
	if err := stopProc(cmd); err != nil && !isSIGTERMExit(err) {
		return ir, fmt.Errorf("%w (log: %s)", err, lastLine(readFile(lf.Name())))
	}
	return ir, ctx.Err()
}

// procCPU is a process's user+system CPU seconds from /proc/PID/stat
// (clock ticks of 1/100 s, as on every Linux Go runs on).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: count from its
	// end. utime and stime are fields 14 and 15.
	s := string(b)
	s = s[strings.LastIndexByte(s, ')')+2:]
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// procStatusOf reads a "kB" field of /proc/PID/status, in bytes.
func procStatusOf(pid int, field string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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

func mibf(b uint64) float64 { return float64(b) / (1 << 20) }

// ParitySummary is the medians of one system in one scenario.
type ParitySummary struct {
	Scenario, System string
	Runs             int
	Rate             float64 // events/s
	CPUPerEvent      float64 // seconds
	PeakRSS          float64 // bytes
	// Ratios to the bare loop and the ceiling in the same round, median.
	VsBare, VsCeiling float64
	// CPUVsBare is CPU per event ÷ the bare loop's, same round, median.
	CPUVsBare float64
	// RSSOverBare is peak RSS − the bare loop's, same round, median.
	RSSOverBare float64
	Resent      int // calls beyond the distinct events, all rounds
}

// SummarizeParity takes medians over rounds, and ratios within a round.
func SummarizeParity(runs []ParityRun) []ParitySummary {
	type key struct {
		sc, sys string
		round   int
	}
	by := map[key]ParityRun{}
	for _, r := range runs {
		by[key{r.Scenario, r.System, r.Round}] = r
	}
	var out []ParitySummary
	for _, sc := range ParityScenarios() {
		for _, sys := range []string{SysCeiling, SysBare, SysRelay} {
			s := ParitySummary{Scenario: sc.Name, System: sys}
			var rate, cpu, rss, vb, vc, cb, ob []float64
			for _, r := range runs {
				if r.Scenario != sc.Name || r.System != sys {
					continue
				}
				s.Runs++
				rate = append(rate, r.Rate)
				s.Resent += r.Calls - r.Keys
				if sys == SysCeiling {
					continue
				}
				cpu = append(cpu, r.CPU/float64(r.Events))
				rss = append(rss, float64(r.PeakRSS))
				if c, ok := by[key{sc.Name, SysCeiling, r.Round}]; ok && c.Rate > 0 {
					vc = append(vc, r.Rate/c.Rate)
				}
				if b, ok := by[key{sc.Name, SysBare, r.Round}]; ok && b.Rate > 0 && b.CPU > 0 {
					vb = append(vb, r.Rate/b.Rate)
					cb = append(cb, (r.CPU/float64(r.Events))/(b.CPU/float64(b.Events)))
					ob = append(ob, float64(r.PeakRSS)-float64(b.PeakRSS))
				}
			}
			if s.Runs == 0 {
				continue
			}
			s.Rate, s.CPUPerEvent, s.PeakRSS = median(rate), median(cpu), median(rss)
			s.VsBare, s.VsCeiling, s.CPUVsBare, s.RSSOverBare = median(vb), median(vc), median(cb), median(ob)
			out = append(out, s)
		}
	}
	return out
}

// Target is one of issue 21's targets, and whether this run met it.
type Target struct {
	What, Want, Got string
	Met             bool
}

// ParityTargets checks issue 21's targets against a run's summaries, idle
// readings and the release binary's size (bytes).
func ParityTargets(sums []ParitySummary, idle []IdleRun, binarySize int64) []Target {
	find := func(sc, sys string) (ParitySummary, bool) {
		for _, s := range sums {
			if s.Scenario == sc && s.System == sys {
				return s, true
			}
		}
		return ParitySummary{}, false
	}
	var ts []Target
	scs := ParityScenarios()
	for i, sc := range scs {
		relay, ok1 := find(sc.Name, SysRelay)
		bare, ok2 := find(sc.Name, SysBare)
		if !ok1 || !ok2 {
			continue
		}
		ts = append(ts, Target{What: sc.Name + ": peak RSS", Want: "≤ bare loop + 4 MiB",
			Got: fmt.Sprintf("%+.1f MiB (%.1f vs %.1f)", relay.RSSOverBare/(1<<20), relay.PeakRSS/(1<<20), bare.PeakRSS/(1<<20)),
			Met: relay.RSSOverBare <= 4<<20})
		ts = append(ts, Target{What: sc.Name + ": events/s", Want: "≥ 1.00× bare loop",
			Got: fmt.Sprintf("%.2f×", relay.VsBare), Met: relay.VsBare >= 1.0})
		if i == 0 {
			ts = append(ts, Target{What: sc.Name + ": events/s", Want: "≥ 97 % of the plain-HTTP ceiling",
				Got: fmt.Sprintf("%.1f %% (bare loop %.1f %%)", 100*relay.VsCeiling, 100*bare.VsCeiling), Met: relay.VsCeiling >= 0.97})
		}
		ts = append(ts, Target{What: sc.Name + ": CPU per event", Want: "≤ 1.05× bare loop",
			Got: fmt.Sprintf("%.2f× (%.0f vs %.0f µs)", relay.CPUVsBare, relay.CPUPerEvent*1e6, bare.CPUPerEvent*1e6), Met: relay.CPUVsBare <= 1.05})
	}
	var rs []float64
	for _, ir := range idle {
		if ir.System == SysRelay {
			rs = append(rs, float64(ir.RSS))
		}
	}
	if len(rs) > 0 {
		m := median(rs)
		ts = append(ts, Target{What: "idle RSS 3 s after start", Want: "≤ 12 MiB", Got: fmt.Sprintf("%.1f MiB", m/(1<<20)), Met: m <= 12<<20})
	}
	if binarySize > 0 {
		ts = append(ts, Target{What: "release binary (make build)", Want: "≤ 25 MB",
			Got: fmt.Sprintf("%.1f MB (%.1f MiB)", float64(binarySize)/1e6, float64(binarySize)/(1<<20)), Met: binarySize <= 25e6})
	}
	return ts
}

// WriteParity writes the parity bench's tables in Markdown: those of the
// parts that ran.
func WriteParity(w io.Writer, res ParityResult, binarySize int64) {
	sums := SummarizeParity(res.Runs)
	if len(res.Runs) > 0 {
		writeSideBySide(w, countRounds(res.Runs), sums)
	}
	if len(res.Idle) > 0 {
		writeIdle(w, res.Idle)
		writeResident(w, res.Idle)
	}
	if len(res.Runs) > 0 || len(res.Idle) > 0 {
		fmt.Fprintln(w, "### Issue 21's targets")
		fmt.Fprintln(w)
		writeTargets(w, ParityTargets(sums, res.Idle, binarySize))
		fmt.Fprintln(w, "| first `make run` on a fresh machine to the first accepted event | ≤ 90 s | not measured here: `make bench-first-run` | |")
		fmt.Fprintln(w)
	}
	if len(res.Agents) > 0 {
		WriteAgents(w, res.Agents)
	}
	if len(res.Heaps) > 0 {
		WriteHeaps(w, res.Heaps)
	}
}

func writeSideBySide(w io.Writer, rounds int, sums []ParitySummary) {
	fmt.Fprintf(w, "### Side by side (medians of %d interleaved rounds)\n\n", rounds)
	fmt.Fprintln(w, "| scenario | system | events/s | vs bare loop | share of the ceiling | CPU per event | vs bare loop | peak RSS | over bare loop | calls re-sent |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range sums {
		if s.System == SysCeiling {
			fmt.Fprintf(w, "| %s | plain-HTTP ceiling | %.0f | | 100 %% | | | | | %d |\n", s.Scenario, s.Rate, s.Resent)
			continue
		}
		vb, cb, ob := "", "", ""
		if s.System != SysBare {
			vb = fmt.Sprintf("%.2f×", s.VsBare)
			cb = fmt.Sprintf("%.2f×", s.CPUVsBare)
			ob = fmt.Sprintf("%+.1f MiB", s.RSSOverBare/(1<<20))
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %.1f %% | %.0f µs | %s | %.1f MiB | %s | %d |\n",
			s.Scenario, s.System, s.Rate, vb, 100*s.VsCeiling, s.CPUPerEvent*1e6, cb, s.PeakRSS/(1<<20), ob, s.Resent)
	}
	fmt.Fprintln(w)
}

func writeIdle(w io.Writer, idle []IdleRun) {
	fmt.Fprintln(w, "| idle, 3 s after start | RSS | anonymous | file-backed (binary) | start to consumer created |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, sys := range []string{SysBare, SysRelay} {
		var rss, anon, file, ready []float64
		for _, ir := range idle {
			if ir.System == sys {
				rss, anon, file = append(rss, float64(ir.RSS)), append(anon, float64(ir.Anon)), append(file, float64(ir.File))
				ready = append(ready, ir.Ready)
			}
		}
		if len(rss) > 0 {
			fmt.Fprintf(w, "| %s | %.1f MiB | %.1f MiB | %.1f MiB | %.0f ms |\n", sys, median(rss)/(1<<20), median(anon)/(1<<20), median(file)/(1<<20), median(ready)*1e3)
		}
	}
	fmt.Fprintln(w)
}

// writeTargets writes the head and the rows of a table of targets.
func writeTargets(w io.Writer, ts []Target) {
	fmt.Fprintln(w, "| target | wanted | this run | met |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, t := range ts {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", t.What, t.Want, t.Got, map[bool]string{true: "yes", false: "**no**"}[t.Met])
	}
}

func countRounds(runs []ParityRun) int {
	var rs []int
	for _, r := range runs {
		if !slices.Contains(rs, r.Round) {
			rs = append(rs, r.Round)
		}
	}
	return len(rs)
}

// writeResident writes where each worker's RSS in its binary lies, from the
// last round's idle reading.
func writeResident(w io.Writer, idle []IdleRun) {
	last := map[string]*Resident{}
	for _, ir := range idle {
		if ir.Resident != nil {
			last[ir.System] = ir.Resident
		}
	}
	b, r := last[SysBare], last[SysRelay]
	if b == nil || r == nil {
		return
	}
	fmt.Fprintln(w, "### Idle RSS in the binary's own pages, by what they hold (/proc/PID/pagemap, last round)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| pages of | bare loop | agentrelay |")
	fmt.Fprintln(w, "|---|---:|---:|")
	kib := func(n int64) string { return fmt.Sprintf("%.0f KiB", float64(n)/1024) }
	var regions []string
	for k := range r.Data {
		regions = append(regions, k)
	}
	slices.SortFunc(regions, func(x, y string) int { return int(r.Data[y] - r.Data[x]) })
	var bt, rt int64
	for _, k := range regions {
		fmt.Fprintf(w, "| %s | %s | %s |\n", k, kib(b.Data[k]), kib(r.Data[k]))
		bt, rt = bt+b.Data[k], rt+r.Data[k]
	}
	var mods []string
	for k := range r.Code {
		mods = append(mods, k)
	}
	for k := range b.Code {
		if !slices.Contains(mods, k) {
			mods = append(mods, k)
		}
	}
	slices.SortFunc(mods, func(x, y string) int { return int(r.Code[y] - r.Code[x]) })
	var bc, rc, brest, rrest int64
	for i, k := range mods {
		bc, rc = bc+b.Code[k], rc+r.Code[k]
		if i >= 15 {
			brest, rrest = brest+b.Code[k], rrest+r.Code[k]
			continue
		}
		fmt.Fprintf(w, "| code of %s | %s | %s |\n", k, kib(b.Code[k]), kib(r.Code[k]))
	}
	if len(mods) > 15 {
		fmt.Fprintf(w, "| code of %d more modules | %s | %s |\n", len(mods)-15, kib(brest), kib(rrest))
	}
	fmt.Fprintf(w, "| **total** | %s | %s |\n\n", kib(bt+bc), kib(rt+rc))
}
