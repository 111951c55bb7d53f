package natsconn

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
