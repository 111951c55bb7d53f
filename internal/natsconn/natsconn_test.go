package natsconn

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/natsembed"
)

func TestTLSVerificationOffOnlyWhenAskedAndLoudly(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tc, err := TLSConfig(config.TLS{}, log, "api")
	if err != nil || tc.InsecureSkipVerify {
		t.Fatalf("default TLS config skips verification: %v", err)
	}
	if logs.Len() != 0 {
		t.Errorf("warning without cause: %s", logs.String())
	}
	tc, err = TLSConfig(config.TLS{InsecureSkipVerify: true}, log, "api")
	if err != nil || !tc.InsecureSkipVerify {
		t.Fatal("explicit insecure_skip_verify ignored")
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "verification is OFF") {
		t.Errorf("no warning: %q", logs.String())
	}
	if _, err := TLSConfig(config.TLS{CAFile: filepath.Join(t.TempDir(), "missing.pem")}, log, "api"); err == nil {
		t.Error("missing CA file accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	_ = os.WriteFile(bad, []byte("not a certificate"), 0o600)
	if _, err := TLSConfig(config.TLS{CAFile: bad}, log, "api"); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("bad CA file: %v", err)
	}
}

func TestSecretFilesAreReadAndChecked(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := Options(config.NATS{Name: "x", ConnectTimeout: config.Duration(time.Second), ReconnectWait: config.Duration(time.Second), User: "u", PasswordFile: empty}, nil, Hooks{}); err == nil || !strings.Contains(err.Error(), "nats.password_file") {
		t.Errorf("empty password file: %v", err)
	}
	if _, err := Options(config.NATS{Name: "x", ConnectTimeout: config.Duration(time.Second), ReconnectWait: config.Duration(time.Second), TokenFile: filepath.Join(dir, "nope")}, nil, Hooks{}); err == nil || !strings.Contains(err.Error(), "nats.token_file") {
		t.Errorf("missing token file: %v", err)
	}
}

// The first connection is retried until NATS is up (it may start after us
// in a rollout); reconnects then never give up.
func TestConnectWaitsForNATSAndReportsState(t *testing.T) {
	dir := t.TempDir()
	s, err := natsembed.Start(natsembed.Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	url := s.ClientURL()
	s.Shutdown()

	up := make(chan bool, 16)
	cfg := config.NATS{URL: url, Name: "test", ConnectTimeout: config.Duration(time.Second), ReconnectWait: config.Duration(50 * time.Millisecond)}
	done := make(chan error, 1)
	go func() {
		nc, err := Connect(context.Background(), cfg, nil, Hooks{Connected: func(v bool) { up <- v }})
		if err == nil {
			defer nc.Close()
			if err := s.Restart(); err != nil { // bounce it once more: the client reconnects
				done <- err
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for !nc.IsConnected() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		done <- err
	}()
	time.Sleep(700 * time.Millisecond)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("never connected")
	}
	if v := <-up; !v {
		t.Error("first state reported is not connected")
	}
}

func TestRedactURLs(t *testing.T) {
	got := redactURLs("nats://user:pw@a:4222,nats://b:4222")
	if strings.Contains(got, "pw") || !strings.Contains(got, "nats://REDACTED@a:4222") || !strings.Contains(got, "nats://b:4222") {
		t.Errorf("%s", got)
	}
}

// A connection the server ends with an error nats.go does not reconnect
// after (here the issue's own: a protocol line over max_control_line) is
// reported through Closed with the cause, and as disconnected.
func TestClosedForGoodIsReportedWithItsCause(t *testing.T) {
	s, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir(), MaxControlLine: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	closed := make(chan error, 2)
	var up atomic.Bool
	cfg := config.NATS{URL: s.ClientURL(), Name: "test", ConnectTimeout: config.Duration(time.Second), ReconnectWait: config.Duration(50 * time.Millisecond)}
	nc, err := Connect(context.Background(), cfg, nil, Hooks{Connected: up.Store, Closed: func(err error) { closed <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish("too.long."+strings.Repeat("x", 300), []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush() // the server answers the line with -ERR and hangs up
	select {
	case err := <-closed:
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "maximum control line exceeded") {
			t.Errorf("Closed(%v), want ErrClosed naming the server's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Closed was not called")
	}
	if !nc.IsClosed() {
		t.Error("the connection is not closed")
	}
	if up.Load() {
		t.Error("still reported as connected")
	}
}

// Closing the connection deliberately is reported too; it says no error
// was recorded, so that its owner can tell it from a failure if it forgot
// that it asked.
func TestCloseIsReported(t *testing.T) {
	s, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	closed := make(chan error, 2)
	cfg := config.NATS{URL: s.ClientURL(), Name: "test", ConnectTimeout: config.Duration(time.Second), ReconnectWait: config.Duration(50 * time.Millisecond)}
	nc, err := Connect(context.Background(), cfg, nil, Hooks{Closed: func(err error) { closed <- err }})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	select {
	case err := <-closed:
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "no error recorded") {
			t.Errorf("Closed(%v)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Closed was not called")
	}
}

func TestClosedErrorHidesUserinfo(t *testing.T) {
	err := closedError(errors.New(`dial nats://agent:s3cr@t@nats.example:4222, tls://tok3n@b:4443/x: refused`))
	if strings.Contains(err.Error(), "s3cr") || strings.Contains(err.Error(), "t@nats") || strings.Contains(err.Error(), "tok3n") {
		t.Errorf("secret in %q", err)
	}
	if !strings.Contains(err.Error(), "nats://REDACTED@nats.example:4222") || !strings.Contains(err.Error(), "tls://REDACTED@b:4443/x") {
		t.Errorf("hosts lost: %q", err)
	}
}

// The worker's connection makes its inboxes (pull deliveries, JetStream API
// answers) under WorkerInboxPrefix, and a caller's extra option replaces it:
// the SRE commands connect with SREInboxPrefix. The permissions example
// lets each role read its own prefix only (deploy/natsauth_test.go).
func TestEachRoleHasItsOwnInboxPrefix(t *testing.T) {
	s, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	cfg := config.NATS{URL: s.ClientURL(), Name: "test", ConnectTimeout: config.Duration(time.Second), ReconnectWait: config.Duration(50 * time.Millisecond)}
	for _, c := range []struct {
		extra []nats.Option
		want  string
	}{
		{nil, WorkerInboxPrefix + "."},
		{[]nats.Option{nats.CustomInboxPrefix(SREInboxPrefix)}, SREInboxPrefix + "."},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		nc, err := Connect(ctx, cfg, nil, Hooks{}, c.extra...)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if got := nc.NewInbox(); !strings.HasPrefix(got, c.want) {
			t.Errorf("inbox %s, want prefix %s", got, c.want)
		}
		// A JetStream API request gets its answer on that prefix.
		js, err := jetstream.New(nc)
		if err == nil {
			_, err = js.AccountInfo(ctx)
		}
		if err != nil {
			t.Errorf("%s: JetStream request: %v", c.want, err)
		}
		nc.Close()
		cancel()
	}
}
