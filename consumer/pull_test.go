package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// pullSetup runs one relay over a real server and the emulator, and records
// every pull request the relay sends.
type pullSetup struct {
	n      *testenv.NATS
	emu    *emulator.Emulator
	relay  *Relay
	rn     *runner
	mu     sync.Mutex
	pulls  []time.Time
	cancel context.CancelFunc
	done   chan error
}

func startPullSetup(t *testing.T, limit int, ackWait time.Duration) *pullSetup {
	t.Helper()
	s := &pullSetup{n: testenv.StartNATS(t), done: make(chan error, 1)}
	s.n.CreateStream(t, jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}})
	var url string
	s.emu, url = testenv.Emulator(t, emulator.WithToken("t", "*"), emulator.WithTrigger("agtch_p", true))
	client, err := agentapi.NewClient(url, agentapi.ClientOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := agentapi.ParseTriggerID("agtch_p")
	agent, _ := client.Agent(id, agentapi.StaticToken(agentapi.NewSecret("t")))

	sub, err := s.n.NC.Subscribe("$JS.API.CONSUMER.MSG.NEXT.P.agentrelay-p", func(m *nats.Msg) {
		var req struct{ Batch int }
		if json.Unmarshal(m.Data, &req) == nil && req.Batch > 0 {
			s.mu.Lock()
			s.pulls = append(s.pulls, time.Now())
			s.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := s.n.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	nc, js := s.n.Connect(t)
	_ = nc
	s.relay, err = New(js, []Route{{
		Name: "p", Stream: "P", Agent: agent, MaxInFlight: limit, AckWait: ackWait,
		Breaker: BreakerSettings{Disabled: true},
	}}, Options{PullExpiry: 3 * time.Second, PullHeartbeat: time.Second, DrainGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s.rn = s.relay.runners[0]
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- s.relay.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, "relay ready", s.relay.Ready)
	t.Cleanup(func() {
		s.cancel()
		<-s.done
	})
	return s
}

func (s *pullSetup) pullCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pulls)
}

// An idle route's request ends at its expiry with a 408 that carries the
// unfilled count; that is what frees the slots for the next request, so an
// idle route asks again about every expiry — not only when the safety net
// (expiry + 2 s without a status) would reset the count.
func TestExpiredRequestsAreReleasedByTheirStatus(t *testing.T) {
	t.Parallel()
	s := startPullSetup(t, 8, 10*time.Second)
	start := time.Now()
	testenv.Eventually(t, 15*time.Second, "four requests", func() bool { return s.pullCount() >= 4 })
	s.mu.Lock()
	gaps := make([]time.Duration, 0, 3)
	for i := 1; i < 4; i++ {
		gaps = append(gaps, s.pulls[i].Sub(s.pulls[i-1]))
	}
	s.mu.Unlock()
	for _, g := range gaps {
		if g < 2500*time.Millisecond || g > 4500*time.Millisecond {
			t.Errorf("requests %v apart, want about the 3s expiry (gaps %v, %v since start)", g, gaps, time.Since(start))
		}
	}
}

// A request the relay gave up on (here: a forced "no heartbeat" reset while
// it is alive, as a CPU-starved process can believe) still delivers into
// the subscription, and those messages are handled at once — not left
// unacknowledged until AckWait, which stalled the route once they filled
// MaxAckPending.
func TestARequestGivenUpOnStillDelivers(t *testing.T) {
	t.Parallel()
	s := startPullSetup(t, 4, 30*time.Second)
	testenv.Eventually(t, 5*time.Second, "a request outstanding", func() bool { return s.pullCount() >= 1 })
	s.rn.eng.check(time.Now().Add(time.Hour)) // believe every request lost
	testenv.Eventually(t, 5*time.Second, "asked again", func() bool { return s.pullCount() >= 2 })

	start := time.Now()
	for i := range 8 {
		s.n.Publish(t, &nats.Msg{Subject: "p.x", Data: []byte(fmt.Sprintf(`{"input":"%d"}`, i))}, jetstream.WithMsgID(fmt.Sprintf("g-%d", i)))
	}
	testenv.Eventually(t, 10*time.Second, "all eight accepted", func() bool { return s.emu.LedgerLen() == 8 })
	c, err := s.n.JS.Consumer(context.Background(), "P", "agentrelay-p")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "nothing ack-pending", func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v: messages waited for AckWait", d)
	}
	if s.emu.Stats().Replays != 0 {
		t.Errorf("%d replays: a message was delivered twice", s.emu.Stats().Replays)
	}
}

// A pull request refused by the server (here: the consumer deleted under
// the relay, so nothing answers the pull subject) releases its slots, backs
// off instead of spinning, and the consumer is re-created.
func TestRefusedRequestsBackOffAndTheConsumerIsRecreated(t *testing.T) {
	t.Parallel()
	s := startPullSetup(t, 4, 10*time.Second)
	testenv.Eventually(t, 5*time.Second, "a request outstanding", func() bool { return s.pullCount() >= 1 })
	if err := s.n.JS.DeleteConsumer(context.Background(), "P", "agentrelay-p"); err != nil {
		t.Fatal(err)
	}
	before := s.pullCount()
	time.Sleep(2 * time.Second)
	if n := s.pullCount() - before; n > 30 {
		t.Errorf("%d pull requests in 2s after the consumer was deleted: no backoff", n)
	}
	testenv.Eventually(t, 15*time.Second, "consumer re-created", func() bool {
		_, err := s.n.JS.Consumer(context.Background(), "P", "agentrelay-p")
		return err == nil
	})
	s.n.Publish(t, &nats.Msg{Subject: "p.x", Data: []byte(`{"input":"after"}`)}, jetstream.WithMsgID("after-1"))
	testenv.Eventually(t, 15*time.Second, "delivered after re-creation", func() bool { return s.emu.LedgerLen() == 1 })
}

// While the server keeps refusing pull requests (here the stream is gone,
// so nothing answers the pull subject), the relay asks less and less often
// instead of about ten times a second.
func TestPersistentRefusalsBackOffExponentially(t *testing.T) {
	t.Parallel()
	s := startPullSetup(t, 4, 10*time.Second)
	testenv.Eventually(t, 5*time.Second, "a request outstanding", func() bool { return s.pullCount() >= 1 })
	if err := s.n.JS.DeleteStream(context.Background(), "P"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	before := s.pullCount()
	time.Sleep(5 * time.Second)
	if n := s.pullCount() - before; n > 8 {
		t.Errorf("%d pull requests in 5s while every one is refused: the backoff does not grow", n)
	}
}
