package deadletter_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// Set-up asks the server for the dead-letter stream once: Ensure keeps
// what it learnt (the stream's weaknesses among it) from that one look-up.
func TestEnsureLooksUpTheStreamOnce(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	const name = "OPS_DLQ"
	n.CreateStream(t, jetstream.StreamConfig{Name: name, Subjects: []string{"agentrelay.dlq.>"}, Storage: jetstream.MemoryStorage, Duplicates: time.Hour})
	// A synchronous subscription: its queue holds what the server routed
	// by the time a flush returns (an asynchronous handler may not have
	// run by then).
	sub, err := n.NC.SubscribeSync(jetstream.DefaultAPIPrefix + "STREAM.INFO." + name)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := n.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dl := deadletter.NewWriter(n.JS, deadletter.Config{Stream: name})
	if err := dl.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	weak := dl.Weaknesses()
	if len(weak) != 1 || !strings.HasPrefix(weak[0], "memory storage") {
		t.Errorf("weaknesses %q, want memory storage", weak)
	}
	// The subscription sees the request once the server routed it; a
	// flush round trip after Ensure's answer guarantees it was delivered.
	if err := n.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, _, err := sub.Pending(); err != nil || got != 1 {
		t.Errorf("%d stream info requests (%v), want 1", got, err)
	}
}
