package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/testenv/wait"
)

// connect opens a client that reconnects forever, quickly.
func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// patience bounds each wait for what takes milliseconds on an idle machine.
// It is generous: `make test` runs packages side by side on a few cores,
// and a bound that is reached fails the test; it never makes a test slower.
const patience = 30 * time.Second

// publishRetryWait is how long publishN waits between attempts.
const publishRetryWait = 50 * time.Millisecond

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	t.Cleanup(cancel)
	return ctx
}

// fetchAck fetches exactly n messages and double-acks each, returning their
// stream sequences.
func fetchAck(t *testing.T, ctx context.Context, cons jetstream.Consumer, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	deadline := time.Now().Add(patience)
	for len(seqs) < n && time.Now().Before(deadline) {
		batch, err := cons.Fetch(n-len(seqs), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			continue // e.g. while reconnecting or during a leader change
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("metadata: %v", err)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ack seq %d: %v", md.Sequence.Stream, err)
			}
			seqs = append(seqs, md.Sequence.Stream)
		}
	}
	if len(seqs) != n {
		t.Fatalf("fetched %d messages %v, want %d", len(seqs), seqs, n)
	}
	return seqs
}

func publishN(t *testing.T, ctx context.Context, js jetstream.JetStream, subj string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		// Retried while the stream has no leader (no responders), for as
		// long as the test waits for anything: an election after a
		// leader's kill took more than the 5 s this once allowed, on a
		// loaded machine.
		_, err := js.Publish(ctx, subj, fmt.Appendf(nil, "m%d", i),
			jetstream.WithMsgID(fmt.Sprintf("id-%d", i)),
			jetstream.WithRetryAttempts(int(patience/publishRetryWait)), jetstream.WithRetryWait(publishRetryWait))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func TestStartRequiresStoreDir(t *testing.T) {
	if _, err := Start(Options{}); err == nil {
		t.Fatal("Start without StoreDir succeeded")
	}
	if _, err := StartCluster(1, t.TempDir(), Options{}); err == nil {
		t.Fatal("StartCluster(1) succeeded")
	}
}

func TestStartFixedPortInUse(t *testing.T) {
	a, err := Start(Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	var p int
	if _, err := fmt.Sscanf(a.ClientURL(), "nats://127.0.0.1:%d", &p); err != nil {
		t.Fatal(err)
	}
	_, err = Start(Options{Port: p, StoreDir: t.TempDir()})
	if !isAddrInUse(err) {
		t.Fatalf("second server on port %d: err = %v, want address in use", p, err)
	}
}

func TestRestartKeepsPortStreamAndAckFloor(t *testing.T) {
	var logs logSink
	s, err := Start(Options{
		StoreDir:   t.TempDir(),
		ServerName: "dev",
		SyncAlways: true,
		Logger:     slog.New(&logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	if !s.Running() {
		t.Fatal("not running after Start")
	}
	if !logs.contains("Server is ready") {
		t.Error("server log lines were not forwarded to slog")
	}
	url := s.ClientURL()

	reconnected := make(chan struct{}, 8)
	nc := connect(t, url)
	nc.SetReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "WORK", Subjects: []string{"work.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "WORK", jetstream.ConsumerConfig{
		Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy, AckWait: patience,
	})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, js, "work.a", 1, 5)
	if got := fetchAck(t, ctx, cons, 2); got[0] != 1 || got[1] != 2 {
		t.Fatalf("first fetch got %v", got)
	}

	for _, how := range []string{"restart", "kill+restart"} {
		if how == "kill+restart" {
			s.Kill()
			if s.Running() {
				t.Fatal("running after Kill")
			}
			s.Kill() // idempotent
		}
		old := s.NATS()
		if err := s.Restart(); err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if s.NATS() == old {
			t.Fatalf("%s: same *server.Server instance", how)
		}
		if got := s.ClientURL(); got != url {
			t.Fatalf("%s: URL %s, want %s", how, got, url)
		}
		select {
		case <-reconnected:
		case <-time.After(patience):
			t.Fatalf("%s: client did not reconnect", how)
		}
	}

	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 2 || info.NumPending != 3 || info.NumAckPending != 0 {
		t.Fatalf("after restart: ack floor %d, pending %d, ack pending %d; want 2, 3, 0",
			info.AckFloor.Stream, info.NumPending, info.NumAckPending)
	}
	publishN(t, ctx, js, "work.a", 6, 6)
	if got := fetchAck(t, ctx, cons, 4); got[0] != 3 || got[3] != 6 {
		t.Fatalf("after restart got %v, want 3..6", got)
	}
	st, err := js.Stream(ctx, "WORK")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 6 {
		t.Fatalf("stream has %d messages, want 6", n)
	}

	s.Shutdown()
	s.Shutdown() // idempotent
	if s.Running() {
		t.Fatal("running after Shutdown")
	}
}

func TestClusterSurvivesStreamLeaderKill(t *testing.T) {
	c, err := StartCluster(3, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	if c.Len() != 3 || c.Node(3) != nil || c.Node(-1) != nil {
		t.Fatal("Len/Node out of range misbehave")
	}
	if _, err := c.StreamLeader("R3"); !errors.Is(err, ErrNoStreamLeader) {
		t.Fatalf("StreamLeader of a missing stream: %v", err)
	}

	nc := connect(t, c.ClientURLs())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "R3", Subjects: []string{"r3.>"}, Storage: jetstream.FileStorage, Replicas: 3,
	}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "R3", jetstream.ConsumerConfig{
		Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy, AckWait: patience,
	})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, js, "r3.x", 1, 5)
	fetchAck(t, ctx, cons, 5)

	var leader int
	wait.ForNil(t, patience, "stream leader", func() (err error) {
		leader, err = c.StreamLeader("R3")
		return err
	})
	c.Node(leader).Kill()

	publishN(t, ctx, js, "r3.x", 6, 10)
	var newLeader int
	wait.ForNil(t, patience, "new stream leader", func() (err error) {
		newLeader, err = c.StreamLeader("R3")
		return err
	})
	if newLeader == leader {
		t.Fatalf("leader still node %d after kill", leader)
	}
	if got := fetchAck(t, ctx, cons, 5); got[0] != 6 || got[4] != 10 {
		t.Fatalf("after leader kill got %v, want 6..10", got)
	}

	// The killed node rejoins on its old client and cluster ports and
	// becomes a current replica of the stream and the consumer again.
	if err := c.Node(leader).Restart(); err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, js, "r3.x", 11, 11)
	wait.ForNil(t, patience, "restarted node current", func() error { return c.Current(leader, "R3", "worker") })
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("consumer info without its leader (%+v): not the leader's answer", info.Cluster)
	}
	if info.AckFloor.Stream != 10 || info.NumPending != 1 || info.NumAckPending != 0 {
		t.Fatalf("consumer: ack floor %d, pending %d, ack pending %d; want 10, 1, 0",
			info.AckFloor.Stream, info.NumPending, info.NumAckPending)
	}
	if err := c.Current(3, "R3"); err == nil {
		t.Error("Current of a node that does not exist")
	}
}

// logSink is a slog.Handler that keeps messages.
type logSink struct {
	mu   sync.Mutex
	msgs []string
}

func (h *logSink) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *logSink) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *logSink) WithGroup(string) slog.Handler                { return h }
func (h *logSink) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}

func (h *logSink) contains(sub string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}
