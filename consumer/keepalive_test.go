package consumer

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/testenv/wait"
)

// countingMsg counts the InProgress it is sent.
type countingMsg struct{ inProgress atomic.Int32 }

func (m *countingMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{}, nil
}
func (m *countingMsg) Data() []byte                     { return nil }
func (m *countingMsg) Headers() nats.Header             { return nil }
func (m *countingMsg) Subject() string                  { return "s" }
func (m *countingMsg) Ack() error                       { return nil }
func (m *countingMsg) Nak() error                       { return nil }
func (m *countingMsg) NakWithDelay(time.Duration) error { return nil }
func (m *countingMsg) TermWithReason(string) error      { return nil }
func (m *countingMsg) InProgress() error {
	m.inProgress.Add(1)
	return nil
}

// Every message held is told to JetStream as in progress about every
// interval (the sweep runs at a quarter of it), until its keep-alive stops;
// none is sent after stop returns, and with nothing held the sweep stops.
func TestKeepAlivesSendInProgressUntilStopped(t *testing.T) {
	const every = 40 * time.Millisecond
	k := newKeepAlives(every, func() { t.Error("an InProgress failed") })
	a, b := &countingMsg{}, &countingMsg{}
	kaA, kaB := k.add(a), k.add(b)
	wait.For(t, 5*time.Second, "three keep-alives each", func() bool {
		return a.inProgress.Load() >= 3 && b.inProgress.Load() >= 3
	})
	kaA.stop()
	stoppedAt := a.inProgress.Load()
	wait.For(t, 5*time.Second, "b still kept alive", func() bool { return b.inProgress.Load() >= 6 })
	if got := a.inProgress.Load(); got != stoppedAt {
		t.Errorf("%d InProgress after stop, want none", got-stoppedAt)
	}
	kaB.stop()
	wait.For(t, 5*time.Second, "the sweep to stop with nothing held", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return !k.armed
	})
	// A message added later is kept alive again.
	c := &countingMsg{}
	defer k.add(c).stop()
	wait.For(t, 5*time.Second, "a later message kept alive", func() bool { return c.inProgress.Load() >= 1 })
}
