package consumer_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/subject"
	"github.com/agentrelay/agentrelay/internal/telemetry"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

const (
	stream   = "EVENTS"
	tok      = "tok-test-5b2e"
	dlStream = deadletter.DefaultStream
)

// harness is a real nats-server, the emulator on loopback, and relays
// between them.
type harness struct {
	t      *testing.T
	nats   *testenv.NATS
	emu    *emulator.Emulator
	apiURL string
	client *agentapi.Client

	// logs holds every relay's log; a failed test writes it out.
	logs testenv.LogBuffer

	mu        sync.Mutex
	filters   map[string]string // route name -> its subject filter
	published []published       // every message the test stored
	replicas  int               // relays started, to tell their logs apart
}

type published struct {
	subject string
	seq     uint64
}

func newHarness(t *testing.T, emuOpts ...emulator.Option) *harness {
	t.Helper()
	h := &harness{t: t, nats: testenv.StartNATS(t)}
	h.nats.CreateStream(t, jetstream.StreamConfig{Name: stream, Subjects: []string{"events.>"}, Storage: jetstream.FileStorage})
	h.emu, h.apiURL = testenv.Emulator(t, append([]emulator.Option{emulator.WithToken(tok, "*")}, emuOpts...)...)
	c, err := agentapi.NewClient(h.apiURL, agentapi.ClientOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	h.client = c
	t.Cleanup(h.logOnFailure)
	return h
}

// maxFailureLog is how much of the relays' log a failed test writes out:
// the end, where the failure is.
const maxFailureLog = 256 << 10

// logOnFailure writes the relays' log out when the test failed, so that a
// failure that is rare under a full run comes with its trace.
func (h *harness) logOnFailure() {
	if !h.t.Failed() {
		return
	}
	out := h.logs.String()
	if len(out) > maxFailureLog {
		out = "[...]" + out[len(out)-maxFailureLog:]
	}
	h.t.Logf("the relays' log:\n%s", out)
}

// agent returns the trigger for id with the test token (or tokens).
func (h *harness) agent(id string, tokens ...agentapi.TokenSource) *agentapi.Agent {
	h.t.Helper()
	tid, err := agentapi.ParseTriggerID(id)
	if err != nil {
		h.t.Fatal(err)
	}
	var ts agentapi.TokenSource = agentapi.StaticToken(agentapi.NewSecret(tok))
	if len(tokens) > 0 {
		ts = tokens[0]
	}
	a, err := h.client.Agent(tid, ts)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// route is a route with short test timings.
func (h *harness) route(name, subject string, agent consumer.Agent) consumer.Route {
	h.mu.Lock()
	if h.filters == nil {
		h.filters = map[string]string{}
	}
	h.filters[name] = subject
	h.mu.Unlock()
	return consumer.Route{
		Name:        name,
		Stream:      stream,
		Subjects:    []string{subject},
		Agent:       agent,
		MaxInFlight: 8,
		AckWait:     5 * time.Second,
		Retry:       consumer.RetryPolicy{MaxAttempts: 5, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		Breaker:     consumer.BreakerSettings{Disabled: true},
	}
}

// running is a relay running in the background.
type running struct {
	relay   *consumer.Relay
	cancel  context.CancelFunc
	done    chan error
	reg     *prometheus.Registry
	js      jetstream.JetStream
	nc      *nats.Conn
	stopped bool
}

func (h *harness) options(reg *prometheus.Registry) consumer.Options {
	h.mu.Lock()
	h.replicas++
	replica := h.replicas
	h.mu.Unlock()
	// The relays' logs go to the harness's buffer, written out if the
	// test fails. To watch a test as it runs: AGENTRELAY_TEST_LOG=1 logs
	// every test's on stderr; any other value only those of the tests
	// whose name contains it.
	var w io.Writer = &h.logs
	if v := os.Getenv("AGENTRELAY_TEST_LOG"); v == "1" || v != "" && strings.Contains(h.t.Name(), v) {
		w = os.Stderr
	}
	logger := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", h.t.Name(), "replica", replica)
	return consumer.Options{
		Logger:        logger,
		Observer:      telemetry.NewMetrics(reg),
		DrainGrace:    5 * time.Second,
		PullExpiry:    3 * time.Second,
		PullHeartbeat: time.Second,
		LagInterval:   100 * time.Millisecond,
	}
}

// start runs a relay for routes on its own NATS connection.
func (h *harness) start(routes ...consumer.Route) *running {
	h.t.Helper()
	return h.startWith(func(*consumer.Options) {}, routes...)
}

func (h *harness) startWith(mod func(*consumer.Options), routes ...consumer.Route) *running {
	h.t.Helper()
	nc, js := h.nats.Connect(h.t)
	reg := prometheus.NewRegistry()
	o := h.options(reg)
	mod(&o)
	relay, err := consumer.New(js, routes, o)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{relay: relay, cancel: cancel, done: make(chan error, 1), reg: reg, js: js, nc: nc}
	go func() { r.done <- relay.Run(ctx) }()
	testenv.Eventually(h.t, 10*time.Second, "relay ready", func() bool {
		select {
		case err := <-r.done:
			h.t.Fatalf("relay stopped: %v", err)
		default:
		}
		return relay.Ready()
	})
	h.t.Cleanup(func() { r.stop(h.t) })
	return r
}

// stop drains the relay and waits for Run to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("relay did not stop within 30s")
	}
}

// publish publishes body to subject, with a message id when id != "".
func (h *harness) publish(subject, body string, hdr nats.Header, id string) *jetstream.PubAck {
	h.t.Helper()
	var opts []jetstream.PublishOpt
	if id != "" {
		opts = append(opts, jetstream.WithMsgID(id))
	}
	ack := h.nats.Publish(h.t, &nats.Msg{Subject: subject, Data: []byte(body), Header: hdr}, opts...)
	h.mu.Lock()
	h.published = append(h.published, published{subject, ack.Sequence})
	h.mu.Unlock()
	return ack
}

// lastPublished is the highest stream sequence the test stored on a
// subject the route captures (0 when none or the route is unknown).
func (h *harness) lastPublished(route string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	filter, ok := h.filters[route]
	if !ok {
		return 0
	}
	var last uint64
	for _, p := range h.published {
		if subject.Matches(filter, p.subject) {
			last = max(last, p.seq)
		}
	}
	return last
}

// consumerInfo reads a route's consumer info.
func (h *harness) consumerInfo(durable string) *jetstream.ConsumerInfo {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.nats.JS.Consumer(ctx, stream, durable)
	if err != nil {
		h.t.Fatalf("consumer %s: %v", durable, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return info
}

// waitSettled waits until every message of the routes' consumers is
// settled: nothing pending, nothing awaiting an ack, and the ack floor past
// everything the test published to them. (The pending count trails a
// publish under load: alone it can read 0 for a message just stored.)
func (h *harness) waitSettled(timeout time.Duration, routes ...string) {
	h.t.Helper()
	testenv.Eventually(h.t, timeout, "consumers settled", func() bool {
		for _, r := range routes {
			info := h.consumerInfo("agentrelay-" + r)
			if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream < h.lastPublished(r) {
				return false
			}
		}
		return true
	})
}

// deadLetters returns every message in the dead-letter stream.
func (h *harness) deadLetters() []*jetstream.RawStreamMsg {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := h.nats.JS.Stream(ctx, dlStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// deadLetterBy returns the dead letter whose original had the given key.
func (h *harness) deadLetterBy(key string) *jetstream.RawStreamMsg {
	h.t.Helper()
	for _, m := range h.deadLetters() {
		if m.Header.Get(event.HeaderIdempotencyKey) == key {
			return m
		}
	}
	return nil
}

// requestsFor counts the API requests the emulator saw for a trigger id.
func (h *harness) requestsFor(id string) int {
	n := 0
	for _, r := range h.emu.Requests() {
		if r.TriggerID == id {
			n++
		}
	}
	return n
}

// countingAgent wraps an agent and records how many calls run at once.
type countingAgent struct {
	consumer.Agent
	mu            sync.Mutex
	now, max, all int
}

func (c *countingAgent) Trigger(ctx context.Context, ev agentapi.Event) (int, error) {
	c.mu.Lock()
	c.now++
	c.all++
	c.max = max(c.max, c.now)
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.now--; c.mu.Unlock() }()
	return c.Agent.Trigger(ctx, ev)
}

func (c *countingAgent) stats() (maxInFlight, calls int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max, c.all
}

func staticToken(s string) agentapi.TokenSource { return agentapi.StaticToken(agentapi.NewSecret(s)) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// metricSum adds up every series of a metric of a running relay whose
// label values include labels.
func metricSum(t *testing.T, r *running, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			lv := map[string]bool{}
			for _, l := range m.GetLabel() {
				lv[l.GetValue()] = true
			}
			for _, want := range labels {
				if !lv[want] {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// metricValue reads a metric of a running relay by name and label values
// (0 when absent).
func metricValue(t *testing.T, r *running, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			lv := map[string]bool{}
			for _, l := range m.GetLabel() {
				lv[l.GetValue()] = true
			}
			for _, want := range labels {
				if !lv[want] {
					continue next
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
