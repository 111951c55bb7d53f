package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/agentrelay/agentrelay/internal/routestatus"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// statusWorker runs the worker with one route, r on stream S, ordered by
// conversation key (so that it answers on the first version's subject
// too), its logs in JSON to the buffer returned.
func statusWorker(t *testing.T, n *testenv.NATS) *testenv.LogBuffer {
	t.Helper()
	n.CreateStream(t, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	cfg := testConfig(t, n.Server.ClientURL(), "127.0.0.1:0")
	cfg.Routes[0].Stream, cfg.Routes[0].Ordering = "S", "conversation_key"
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	started, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- Run(ctx, cfg, log, Options{Started: func(a string) { started <- a }}) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("worker did not start: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("worker did not start")
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// The service's subscriptions reach the server a moment after start.
	testenv.Eventually(t, 5*time.Second, "the status service answers", func() bool {
		_, err := n.NC.Request("agentrelay.status.S.agentrelay-r", nil, time.Second)
		return err == nil
	})
	return logs
}

func statusOf(t *testing.T, nc *nats.Conn, body []byte) *nats.Msg {
	t.Helper()
	m, err := nc.Request("agentrelay.status.S.agentrelay-r", body, 5*time.Second)
	if err != nil {
		t.Fatalf("status request: %v", err)
	}
	return m
}

// Every replica answers for each of its routes, saying who it is; a
// request over the size limit gets an error and is not decoded.
func TestStatusServiceAnswersForEveryRouteAndRefusesLargeRequests(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	logs := statusWorker(t, n)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", logs.String())
		}
	})
	var ans routestatus.Answer
	m := statusOf(t, n.NC, []byte(`{"max_keys": 3}`))
	if err := json.Unmarshal(m.Data, &ans); err != nil || ans.Status.Route != "r" || ans.Status.Health != "healthy" || ans.Replica.ID == "" || ans.Replica.ClientID == 0 {
		t.Errorf("answer %s (%v), want route r healthy, with the replica's id and client id", m.Data, err)
	}
	m = statusOf(t, n.NC, []byte(`{"max_keys": 3, "pad": "`+strings.Repeat("x", routestatus.MaxRequest)+`"}`))
	if m.Header.Get(micro.ErrorCodeHeader) != routestatus.ErrTooLarge {
		t.Errorf("a request over %d bytes got %q %s, want error %s", routestatus.MaxRequest, m.Header.Get(micro.ErrorCodeHeader), m.Data, routestatus.ErrTooLarge)
	}
	m = statusOf(t, n.NC, []byte(`{"max_keys": -1}`))
	if m.Header.Get(micro.ErrorCodeHeader) != routestatus.ErrBadRequest {
		t.Errorf("max_keys -1 got %q, want error %s", m.Header.Get(micro.ErrorCodeHeader), routestatus.ErrBadRequest)
	}
}

// A flood of 1 MB requests on the status subjects (the first version's,
// agentrelay.ordered.>, as in the finding, and agentrelay.status.>) is
// dropped by the client library as it arrives: it neither piles up in the
// worker's memory nor logs a warning for each drop, and the service still
// answers after it.
func TestStatusServiceSurvivesAFloodOfLargeRequests(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	logs := statusWorker(t, n)
	base := workerHeap()
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				peak = max(peak, workerHeap())
			}
		}
	}()
	warnsBefore := strings.Count(logs.String(), `"level":"WARN"`)
	handledBefore := handled(t, n.NC)
	// Each subject gets twice the heap bound, so a service that held the
	// flood in memory would pass it. A service with nats.go's default
	// pending limits queues and decodes the requests as fast as they come
	// (its heap stays flat): the handled count below catches that one. Not
	// more: under -race every megabyte the server and the publishers copy
	// costs about 0.1 s of CPU.
	const bound = 16 << 20
	const conns, size = 2, 1<<20 - 4096
	flood(t, n, "agentrelay.ordered.S.agentrelay-r", conns, 2*bound/conns/size, size)
	flood(t, n, "agentrelay.status.S.agentrelay-r", conns, 2*bound/conns/size, size)
	close(stop)
	<-sampled
	t.Logf("worker heap %d MB before, %d MB at most during the flood", base>>20, peak>>20)
	if grew := int64(peak) - int64(base); grew > bound {
		t.Errorf("the heap grew by %d MB during the flood (from %d MB), more than %d MB: requests were buffered", grew>>20, base>>20, bound>>20)
	}
	if warns := strings.Count(logs.String(), `"level":"WARN"`) - warnsBefore; warns > 2 {
		t.Errorf("%d warnings during the flood, want at most 2 (rate-limited):\n%s", warns, logs.String())
	}
	if got := handled(t, n.NC) - handledBefore; got > 0 {
		t.Errorf("%d of the flood's 1 MB requests reached the handler: they were queued and decoded, not dropped as they arrived", got)
	}
	if strings.Contains(logs.String(), "disconnected from NATS") {
		t.Errorf("the flood cut the worker's own connection:\n%s", logs.String())
	}
	m := statusOf(t, n.NC, nil)
	if m.Header.Get(micro.ErrorCodeHeader) != "" || !strings.Contains(string(m.Data), `"route":"r"`) {
		t.Errorf("after the flood the service answered %q %s", m.Header.Get(micro.ErrorCodeHeader), m.Data)
	}
}

// handled counts the requests the status service's endpoints handled, as
// its STATS verb says.
func handled(t *testing.T, nc *nats.Conn) int {
	t.Helper()
	// The flood may have cost the service its own connection (the server
	// cuts a slow consumer); it reconnects.
	var m *nats.Msg
	testenv.Eventually(t, 30*time.Second, "the service answers STATS", func() bool {
		var err error
		m, err = nc.Request("$SRV.STATS.agentrelay", nil, 2*time.Second)
		return err == nil
	})
	var st micro.Stats
	if err := json.Unmarshal(m.Data, &st); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range st.Endpoints {
		n += e.NumRequests
	}
	return n
}

// flood publishes, from conns connections at once, each requests
// requests of size bytes to subject.
func flood(t *testing.T, n *testenv.NATS, subject string, conns, requests, size int) {
	t.Helper()
	body := []byte(`{"max_keys": 1, "pad": "` + strings.Repeat("x", size) + `"}`)
	var wg sync.WaitGroup
	for range conns {
		nc, _ := n.Connect(t)
		wg.Go(func() {
			for range requests {
				if err := nc.PublishRequest(subject, "flood.replies", body); err != nil {
					t.Error("publishing the flood:", err)
					return
				}
			}
			_ = nc.Flush()
		})
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond) // what is queued is queued by now
}

// workerHeap is the heap in use after a collection, less what the
// embedded NATS server and the flood's publishers hold: they run in the
// test's process, and what the server buffers for a slow reader is the
// server's memory, not the worker's. It reads the heap profile, whose
// sampling catches every allocation of a flood's size.
func workerHeap() uint64 {
	runtime.GC()
	runtime.GC() // the profile is as of the last completed cycle
	n, _ := runtime.MemProfile(nil, true)
	recs := make([]runtime.MemProfileRecord, n+64)
	n, _ = runtime.MemProfile(recs, true)
	var total int64
	for _, r := range recs[:n] {
		if !allocatedBy(r.Stack(), "github.com/nats-io/nats-server/", "internal/app.flood") {
			total += r.InUseBytes()
		}
	}
	return uint64(max(total, 0))
}

// allocatedBy reports whether a function whose name holds one of names is
// on stack.
func allocatedBy(stack []uintptr, names ...string) bool {
	frames := runtime.CallersFrames(stack)
	for {
		f, more := frames.Next()
		for _, name := range names {
			if strings.Contains(f.Function, name) {
				return true
			}
		}
		if !more {
			return false
		}
	}
}
