// Package testenv starts the real parts tests run against: an embedded
// nats-server with JetStream (random port, temporary file store) and the API
// emulator on loopback. Everything started is stopped by t.Cleanup. It also
// holds what tests share rather than copy: waiting for a condition
// (Eventually, and package wait) and collecting logs (LogBuffer).
package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/natsembed"
	"github.com/agentrelay/agentrelay/internal/testenv/wait"
)

// NATS is an embedded server and a client connection to it.
type NATS struct {
	Server *natsembed.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// StartNATS starts a JetStream server on a random port with a file store
// under t.TempDir, and connects to it.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	s, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("starting nats-server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	n := &NATS{Server: s}
	n.NC, n.JS = n.Connect(t)
	return n
}

// Connect opens another connection that reconnects forever, quickly.
func (n *NATS) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.Server.ClientURL(),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatalf("connecting to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// CreateStream creates a file-store stream.
func (n *NATS) CreateStream(t testing.TB, cfg jetstream.StreamConfig) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := n.JS.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatalf("creating stream %s: %v", cfg.Name, err)
	}
	return s
}

// Publish publishes a message and waits for the stream's ack.
func (n *NATS) Publish(t testing.TB, m *nats.Msg, opts ...jetstream.PublishOpt) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := n.JS.PublishMsg(ctx, m, opts...)
	if err != nil {
		t.Fatalf("publishing to %s: %v", m.Subject, err)
	}
	return ack
}

// Emulator starts the API emulator on loopback and returns it with its base
// URL.
func Emulator(t testing.TB, opts ...emulator.Option) (*emulator.Emulator, string) {
	t.Helper()
	emu := emulator.New(opts...)
	srv, err := emu.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return emu, srv.URL
}

// Eventually polls cond until it holds or timeout passes, then fails the
// test with msg (see wait.For).
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	wait.For(t, timeout, msg, cond)
}
