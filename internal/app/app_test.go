package app

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/natsconn"
	"github.com/agentrelay/agentrelay/internal/natsembed"
	"github.com/agentrelay/agentrelay/internal/telemetry"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func testConfig(t *testing.T, natsURL, metrics string) *config.Config {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &config.Config{
		NATS:    config.NATS{URL: natsURL, ReconnectWait: config.Duration(50 * time.Millisecond)},
		API:     config.API{BaseURL: "http://127.0.0.1:1"},
		Metrics: config.Metrics{Listen: metrics},
		Worker:  config.Worker{DrainGrace: config.Duration(time.Second), PullExpiry: config.Duration(3 * time.Second)},
		Routes:  []config.Route{{Name: "r", Stream: "LATE", TriggerID: "agtch_r", Token: config.Token{File: tok}}},
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func probe(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type run struct {
	cancel  context.CancelFunc
	done    chan error
	started chan string
}

func start(cfg *config.Config) *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{cancel: cancel, done: make(chan error, 1), started: make(chan string, 1)}
	log := slog.New(slog.DiscardHandler)
	go func() { r.done <- Run(ctx, cfg, log, Options{Started: func(a string) { r.started <- a }}) }()
	return r
}

func (r *run) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v, want nil after a stop", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
}

// The worker is alive (liveness) before NATS is reachable, says why it is not
// ready, becomes ready once NATS is up and the stream exists, and stops
// cleanly at any stage.
func TestLiveBeforeNATSReadyAfterSetUp(t *testing.T) {
	t.Parallel()
	natsAddr := freePort(t)
	metrics := freePort(t)
	cfg := testConfig(t, "nats://"+natsAddr, metrics)
	r := start(cfg)
	base := "http://" + metrics
	testenv.Eventually(t, 10*time.Second, "/healthz served before NATS is up", func() bool {
		code, _ := probe(base + "/healthz")
		return code == 200
	})
	if code, body := probe(base + "/readyz"); code != 503 || !strings.Contains(body, "connecting to NATS") {
		t.Errorf("/readyz = %d %q", code, body)
	}

	_, port, _ := net.SplitHostPort(natsAddr)
	p, _ := strconv.Atoi(port)
	ns, err := natsembed.Start(natsembed.Options{Port: p, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	testenv.Eventually(t, 20*time.Second, "set-up reports the missing stream", func() bool {
		code, body := probe(base + "/readyz")
		return code == 503 && strings.Contains(body, `stream "LATE" does not exist`)
	})

	nc, js := (&testenv.NATS{Server: ns}).Connect(t)
	defer nc.Close()
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.started:
	case err := <-r.done:
		t.Fatalf("Run stopped: %v", err)
	case <-time.After(40 * time.Second):
		t.Fatal("set-up never succeeded after the stream appeared")
	}
	testenv.Eventually(t, 5*time.Second, "/readyz 200 once relaying", func() bool {
		code, _ := probe(base + "/readyz")
		return code == 200
	})
	r.stop(t)
}

func TestStopWhileConnectingIsClean(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "nats://"+freePort(t), "off")
	r := start(cfg)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	r.stop(t)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stopping took %v", d)
	}
}

// gauge reads a gauge without labels from reg; -1 when it is absent.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// The failure: the server answers a protocol line longer than its
// max_control_line with -ERR and hangs up, and nats.go does not reconnect
// after that. The worker must not stay up with the dead connection: /healthz
// fails with the cause, agentrelay_ready and agentrelay_nats_connected drop
// to 0, the cause is logged as an error, and Run drains what it can and
// returns the cause, without waiting for a stop. The message whose call was
// in flight is not acked: it stays for the next worker.
func TestConnectionClosedForGoodIsFatal(t *testing.T) {
	t.Parallel()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	n := &testenv.NATS{Server: ns}
	_, js := n.Connect(t)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}}); err != nil {
		t.Fatal(err)
	}
	// The API hangs on the first call, so that a message is in flight, and
	// the drain takes its grace period: long enough to see /healthz fail
	// before the listener closes.
	emu, apiURL := testenv.Emulator(t, emulator.WithToken("t", "agtch_r"), emulator.WithTrigger("agtch_r", true))
	emu.Script(emulator.Fault{Kind: emulator.FaultHang})

	metrics := freePort(t)
	cfg := testConfig(t, ns.ClientURL(), metrics)
	// A long durable name makes every pull request a long protocol line
	// (the was a long subject), longer than the limit set below.
	durable := "agentrelay-" + strings.Repeat("d", 240)
	cfg.Routes[0].Durable = durable
	cfg.API.BaseURL = apiURL
	cfg.API.AllowInsecureHTTP = true
	cfg.Worker.DrainGrace = config.Duration(3 * time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	started := make(chan string, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), Options{Registry: reg, Started: func(a string) { started <- a }})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Run stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not start")
	}
	base := "http://" + metrics
	testenv.Eventually(t, 10*time.Second, "ready and live", func() bool {
		live, _ := probe(base + "/healthz")
		ready, _ := probe(base + "/readyz")
		return live == 200 && ready == 200 && gauge(t, reg, "agentrelay_ready") == 1 && gauge(t, reg, "agentrelay_nats_connected") == 1
	})
	if _, err := js.Publish(context.Background(), "late.x", []byte(`{"input":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the call hangs at the API", func() bool { return emu.Stats().Hangs == 1 })

	// The server comes back with a limit that the connection's CONNECT
	// line fits in and its pull requests do not: the worker reconnects and
	// its next pull request is refused with -ERR.
	if err := ns.SetMaxControlLine(300); err != nil {
		t.Fatal(err)
	}
	if err := ns.Restart(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "/healthz fails with the cause", func() bool {
		code, body := probe(base + "/healthz")
		return code == 503 && strings.Contains(body, "maximum control line exceeded")
	})
	if code, body := probe(base + "/readyz"); code != 503 || !strings.Contains(body, "maximum control line exceeded") {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if v := gauge(t, reg, "agentrelay_ready"); v != 0 {
		t.Errorf("agentrelay_ready = %v, want 0", v)
	}
	if v := gauge(t, reg, "agentrelay_nats_connected"); v != 0 {
		t.Errorf("agentrelay_nats_connected = %v, want 0", v)
	}
	select {
	case err := <-done:
		if !errors.Is(err, natsconn.ErrClosed) || !strings.Contains(err.Error(), "maximum control line exceeded") {
			t.Errorf("Run returned %v, want natsconn.ErrClosed with the cause", err)
		}
	case <-time.After(cfg.Worker.DrainGrace.D() + 10*time.Second):
		t.Fatal("Run did not return after the connection was closed for good")
	}
	if !hasLog(logs.String(), "ERROR", "maximum control line exceeded") {
		t.Errorf("no ERROR log with the cause:\n%s", logs.String())
	}

	if v := counter(t, reg, "agentrelay_nats_reconnects_total"); v < 1 {
		t.Errorf("the worker never reconnected (%v): the limit cut its CONNECT, not a later line", v)
	}

	// The test's own requests are over the limit too: back to the default.
	if err := ns.SetMaxControlLine(0); err != nil {
		t.Fatal(err)
	}
	if err := ns.Restart(); err != nil {
		t.Fatal(err)
	}
	// The test's connection reconnects after the restart like any other
	// (after its reconnect wait, slower on a loaded machine).
	var info *jetstream.ConsumerInfo
	testenv.Eventually(t, 15*time.Second, "the consumer's info after the restart", func() bool {
		c, err := js.Consumer(context.Background(), "LATE", durable)
		if err == nil {
			info, err = c.Info(context.Background())
		}
		return err == nil
	})
	if info.AckFloor.Stream != 0 {
		t.Errorf("the message whose call never finished was acked (ack floor %d)", info.AckFloor.Stream)
	}
}

// counter reads a counter without labels from reg; -1 when it is absent.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return -1
}

// hasLog reports whether a JSON log line at level mentions text.
func hasLog(logs, level, text string) bool {
	for _, line := range strings.Split(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["level"] == level && strings.Contains(line, text) {
			return true
		}
	}
	return false
}

// A listener that stops serving while the worker runs (not by Run's own
// shutdown) is as fatal as a dead connection: the probes would fail with no
// cause anywhere, so the worker says why and stops.
func TestListenerStoppingIsFatal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var logs testenv.LogBuffer
	reg := prometheus.NewRegistry()
	state := &health{log: slog.New(slog.NewJSONHandler(&logs, nil)), metrics: telemetry.NewMetrics(reg), stop: cancel}
	srv, ln, err := serveHTTP("127.0.0.1:0", reg, state)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if code, _ := probe("http://" + ln.Addr().String() + "/healthz"); code != 200 {
		t.Fatalf("/healthz = %d before the failure", code)
	}
	_ = ln.Close()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Run's context was not canceled")
	}
	if err := context.Cause(ctx); !errors.Is(err, ErrListenerStopped) {
		t.Errorf("cause %v, want ErrListenerStopped", err)
	}
	if !errors.Is(state.err(), ErrListenerStopped) {
		t.Errorf("recorded %v", state.err())
	}
	if !hasLog(logs.String(), "ERROR", ErrListenerStopped.Error()) {
		t.Errorf("no ERROR log:\n%s", logs.String())
	}
}

// Run's own shutdown of the listener and close of the connection are no
// failures.
func TestOwnShutdownIsNotAFailure(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	reg := prometheus.NewRegistry()
	state := &health{log: slog.New(slog.DiscardHandler), metrics: telemetry.NewMetrics(reg), stop: cancel}
	srv, _, err := serveHTTP("127.0.0.1:0", reg, state)
	if err != nil {
		t.Fatal(err)
	}
	state.stopping()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	state.natsClosed(natsconn.ErrClosed)
	if err := state.err(); err != nil || ctx.Err() != nil {
		t.Errorf("recorded %v, context %v", err, ctx.Err())
	}
}

// With worker.consumers: observe, a route's missing consumer is waited for
// like a missing stream: set-up is retried, /readyz says why, nothing is
// created, and the worker starts once the operator has created it.
func TestObservedConsumerIsWaitedForLikeAStream(t *testing.T) {
	t.Parallel()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	_, js := (&testenv.NATS{Server: ns}).Connect(t)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}}); err != nil {
		t.Fatal(err)
	}
	metrics := freePort(t)
	cfg := testConfig(t, ns.ClientURL(), metrics)
	cfg.Worker.Consumers = "observe"
	r := start(cfg)
	base := "http://" + metrics
	testenv.Eventually(t, 20*time.Second, "set-up reports the missing consumer", func() bool {
		code, body := probe(base + "/readyz")
		return code == 503 && strings.Contains(body, `consumer does not exist: "agentrelay-r" on stream "LATE"`)
	})
	if _, err := js.Consumer(context.Background(), "LATE", "agentrelay-r"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("observe mode created the consumer (lookup: %v)", err)
	}
	if _, err := js.CreateConsumer(context.Background(), "LATE", Route(cfg.Routes[0], nil).ConsumerConfig()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.started:
	case err := <-r.done:
		t.Fatalf("Run stopped: %v", err)
	case <-time.After(40 * time.Second):
		t.Fatal("set-up never succeeded after the consumer appeared")
	}
	r.stop(t)
}
