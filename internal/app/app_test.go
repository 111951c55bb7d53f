package app

import (
	"context"
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

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/natsembed"
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
	cfg := testConfig(t, "nats://"+freePort(t), "off")
	r := start(cfg)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	r.stop(t)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stopping took %v", d)
	}
}
