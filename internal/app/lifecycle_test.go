package app

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/natsembed"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// recorder makes components that note their starts and stops.
type recorder struct{ events []string }

func (r *recorder) component(name string, startErr error) component {
	return component{
		name: name,
		start: func(context.Context) error {
			r.events = append(r.events, "start "+name)
			return startErr
		},
		stop: func() { r.events = append(r.events, "stop "+name) },
	}
}

// Components start in the order given and stop in the reverse order; one
// without a start or a stop is simply passed.
func TestLifecycleStopsInTheReverseOrderOfStart(t *testing.T) {
	t.Parallel()
	var r recorder
	l := &lifecycle{log: slog.New(slog.DiscardHandler)}
	err := l.start(context.Background(), r.component("listener", nil), component{name: "no-op"}, r.component("nats", nil), r.component("relay", nil))
	if err != nil {
		t.Fatal(err)
	}
	l.stop()
	want := []string{"start listener", "start nats", "start relay", "stop relay", "stop nats", "stop listener"}
	if !slices.Equal(r.events, want) {
		t.Errorf("got %v, want %v", r.events, want)
	}
	l.stop()
	if len(r.events) != len(want) {
		t.Errorf("a second stop stopped again: %v", r.events)
	}
}

// A start that fails, or a context that ends, stops the start there: what
// started is stopped, in reverse, and nothing else.
func TestLifecycleStopsOnlyWhatStarted(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	var r recorder
	l := &lifecycle{log: slog.New(slog.DiscardHandler)}
	err := l.start(context.Background(), r.component("a", nil), r.component("b", nil), r.component("c", boom), r.component("d", nil))
	l.stop()
	want := []string{"start a", "start b", "start c", "stop b", "stop a"}
	if !errors.Is(err, boom) || l.failed != "c" || !slices.Equal(r.events, want) {
		t.Errorf("got %v, failed %q, %v; want boom, c, %v", err, l.failed, r.events, want)
	}

	ctx, cancel := context.WithCancel(context.Background())
	r = recorder{}
	l = &lifecycle{log: slog.New(slog.DiscardHandler)}
	stopping := component{name: "cancels", start: func(context.Context) error { cancel(); return nil }}
	err = l.start(ctx, r.component("a", nil), stopping, r.component("b", nil))
	l.stop()
	want = []string{"start a", "stop a"}
	if !errors.Is(err, context.Canceled) || l.failed != "b" || !slices.Equal(r.events, want) {
		t.Errorf("got %v, failed %q, %v; want canceled, b, %v", err, l.failed, r.events, want)
	}
}

// The worker's components, as Run starts and stops them: the listener
// first and last (the probes and /metrics answer throughout), the relay
// last and first (it drains while the NATS connection, the dead-letter
// watcher and the status service are still there), and the connection
// closes after the relay has drained.
func TestWorkerStopsItsComponentsInReverse(t *testing.T) {
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
	cfg := testConfig(t, ns.ClientURL(), "127.0.0.1:0")
	cfg.Routes[0].Ordering = "conversation_key" // so that the status service runs
	var logs testenv.LogBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done, started := make(chan error, 1), make(chan struct{})
	go func() { done <- Run(ctx, cfg, log, Options{Started: func(string) { close(started) }}) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Run stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not start")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}

	want := []string{"metrics listener", "tracing", "trigger API client", "NATS connection", "streams and consumers",
		"status service", "dead-letter watcher", "relay"}
	startedNames, stoppedNames := lifecycleLog(t, logs.String())
	if !slices.Equal(startedNames, want) {
		t.Errorf("started %q, want %q", startedNames, want)
	}
	slices.Reverse(want)
	if !slices.Equal(stoppedNames, want) {
		t.Errorf("stopped %q, want %q", stoppedNames, want)
	}
}

// lifecycleLog returns the components in the order the log says they
// started and stopped.
func lifecycleLog(t *testing.T, logs string) (started, stopped []string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec struct{ Msg, Component string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		switch {
		case rec.Component == "":
		case rec.Msg == "started":
			started = append(started, rec.Component)
		case rec.Msg == "stopped":
			stopped = append(stopped, rec.Component)
		}
	}
	return started, stopped
}
