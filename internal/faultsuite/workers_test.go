package faultsuite

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fleet runs worker replicas as real processes of the agentrelay binary,
// one per slot, all with the same configuration file. A slot's process can
// be killed with SIGKILL and a new one started in its place; every process
// ever started is kept for the end-of-run checks (exit status, logs).
type fleet struct {
	t       testing.TB
	bin     string
	cfgPath string
	logDir  string
	api     *apiServer

	mu     sync.Mutex
	slots  []*worker // the current process of each slot; nil while down
	active int       // the slots in use (the rest wait for a scale-up)
	all    []*worker
}

// worker is one process.
type worker struct {
	slot    int
	logPath string
	cmd     *exec.Cmd
	watch   *logWatch
	exited  chan struct{}
	waitErr error // valid after exited is closed

	killed atomic.Bool // SIGKILLed by the suite
	termed atomic.Bool // SIGTERMed by the suite
}

// newFleet prepares slots for worker processes. Their logs go to a
// temporary folder, or under $AGENTRELAY_FAULT_LOGDIR (kept) when set.
func newFleet(t testing.TB, bin, cfgPath string, api *apiServer, slots int) *fleet {
	logDir := t.TempDir()
	if d := os.Getenv("AGENTRELAY_FAULT_LOGDIR"); d != "" {
		logDir = filepath.Join(d, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := &fleet{t: t, bin: bin, cfgPath: cfgPath, logDir: logDir, api: api, slots: make([]*worker, slots), active: slots}
	t.Cleanup(f.killAll)
	return f
}

// start starts a process in slot, which must be empty.
func (f *fleet) start(slot int) (*worker, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.slots[slot] != nil {
		return nil, fmt.Errorf("slot %d is taken", slot)
	}
	w := &worker{
		slot:    slot,
		logPath: filepath.Join(f.logDir, fmt.Sprintf("worker-%d-%d.log", slot, len(f.all))),
		watch:   &logWatch{},
		exited:  make(chan struct{}),
	}
	logFile, err := os.Create(w.logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(f.bin, "run", "--config", f.cfgPath)
	cmd.Env = append(cleanEnv(),
		"AGENTRELAY_API_BASE_URL="+f.api.WorkerURL(slot),
		"AGENTRELAY_LOG_FORMAT=json",
		"AGENTRELAY_METRICS_LISTEN=127.0.0.1:0",
	)
	cmd.Stdout = logFile
	cmd.Stderr = io.MultiWriter(logFile, w.watch)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	w.cmd = cmd
	go func() {
		w.waitErr = cmd.Wait()
		logFile.Close()
		close(w.exited)
	}()
	f.slots[slot] = w
	f.all = append(f.all, w)
	return w, nil
}

// cleanEnv is this process's environment without agentrelay's own
// variables, which would override the suite's configuration.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTRELAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// current returns the process in slot, or nil.
func (f *fleet) current(slot int) *worker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.slots[slot]
}

// kill SIGKILLs the process in slot, waits for it to be gone and empties
// the slot. Nothing in the worker runs after SIGKILL: no drain, no ack, no
// nak, no flush.
func (f *fleet) kill(slot int) error {
	w := f.current(slot)
	if w == nil {
		return fmt.Errorf("slot %d is empty", slot)
	}
	w.killed.Store(true)
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-w.exited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("worker %d still running 10s after SIGKILL", slot)
	}
	f.mu.Lock()
	f.slots[slot] = nil
	f.mu.Unlock()
	return nil
}

// stopAll sends SIGTERM to every running process and waits for each to
// drain and exit; a worker that exits non-zero, or not within timeout, is
// an error.
func (f *fleet) stopAll(timeout time.Duration) error {
	f.mu.Lock()
	running := append([]*worker(nil), f.slots...)
	f.mu.Unlock()
	var errs []error
	for _, w := range running {
		if w == nil {
			continue
		}
		w.termed.Store(true)
		if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, err)
		}
	}
	deadline := time.After(timeout)
	for _, w := range running {
		if w == nil {
			continue
		}
		select {
		case <-w.exited:
			if w.waitErr != nil {
				errs = append(errs, fmt.Errorf("worker %d exited after SIGTERM with %v; log tail:\n%s", w.slot, w.waitErr, tail(w.logPath, 20)))
			}
		case <-deadline:
			errs = append(errs, fmt.Errorf("worker %d did not drain and exit within %v of SIGTERM", w.slot, timeout))
		}
	}
	f.mu.Lock()
	clear(f.slots)
	f.mu.Unlock()
	return errors.Join(errs...)
}

// killAll is the cleanup: nothing the suite started outlives the test.
func (f *fleet) killAll() {
	f.mu.Lock()
	all := append([]*worker(nil), f.all...)
	f.mu.Unlock()
	for _, w := range all {
		select {
		case <-w.exited:
		default:
			w.killed.Store(true)
			_ = w.cmd.Process.Signal(syscall.SIGKILL)
			<-w.exited
		}
	}
}

// waitReady waits until every slot's process is relaying (its routes bound
// and pulling).
func (f *fleet) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if f.allRelaying() {
			return nil
		}
		if err := f.unexpectedExits(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("workers not relaying after %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// activate puts the first n slots in use: waitReady and allRelaying
// expect a process in each.
func (f *fleet) activate(n int) {
	f.mu.Lock()
	f.active = n
	f.mu.Unlock()
}

// allRelaying reports whether every slot in use has a process that is
// relaying.
func (f *fleet) allRelaying() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.slots[:f.active] {
		if w == nil || !w.watch.relaying() {
			return false
		}
	}
	return true
}

// unexpectedExits reports processes that exited although the suite neither
// killed nor stopped them.
func (f *fleet) unexpectedExits() error {
	f.mu.Lock()
	all := append([]*worker(nil), f.all...)
	f.mu.Unlock()
	var errs []error
	for _, w := range all {
		select {
		case <-w.exited:
			if !w.killed.Load() && !w.termed.Load() {
				errs = append(errs, fmt.Errorf("worker %d (%s) exited on its own: %v; log tail:\n%s", w.slot, filepath.Base(w.logPath), w.waitErr, tail(w.logPath, 20)))
			}
		default:
		}
	}
	return errors.Join(errs...)
}

// logs returns the log files of every process started.
func (f *fleet) logs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	paths := make([]string, len(f.all))
	for i, w := range f.all {
		paths[i] = w.logPath
	}
	return paths
}

// scrapeMetrics reads /metrics of every running worker.
func (f *fleet) scrapeMetrics() (string, error) {
	f.mu.Lock()
	var addrs []string
	for _, w := range f.slots {
		if w != nil && w.watch.metricsAddr() != "" {
			addrs = append(addrs, w.watch.metricsAddr())
		}
	}
	f.mu.Unlock()
	if len(addrs) == 0 {
		return "", errors.New("no running worker serves /metrics")
	}
	c := &http.Client{Timeout: 5 * time.Second}
	var all strings.Builder
	for _, addr := range addrs {
		resp, err := c.Get("http://" + addr + "/metrics")
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		all.Write(b)
	}
	return all.String(), nil
}

// logWatch follows a worker's JSON log for the lines the suite waits for.
type logWatch struct {
	mu      sync.Mutex
	partial []byte
	ready   bool
	addr    string
}

func (l *logWatch) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := l.partial[:i]
		switch {
		case bytes.Contains(line, []byte(`"msg":"relaying"`)):
			l.ready = true
		case bytes.Contains(line, []byte(`"msg":"serving /metrics`)):
			var rec struct{ Addr string }
			if json.Unmarshal(line, &rec) == nil {
				l.addr = rec.Addr
			}
		}
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *logWatch) relaying() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ready
}

func (l *logWatch) metricsAddr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
