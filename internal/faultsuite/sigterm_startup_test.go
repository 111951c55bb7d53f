package faultsuite

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/internal/testenv"
)

// SIGTERM while the worker is still starting (here: waiting for NATS to come
// up, as in a Kubernetes rollout where NATS starts later) stops it cleanly
// with exit status 0, as a drain would: there is nothing to drain yet.
func TestSIGTERMDuringStartUpExitsZero(t *testing.T) {
	bin := workerBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := ln.Addr().String()
	ln.Close() // nothing listens here: NATS "is not up yet"
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	cfg := filepath.Join(dir, "agentrelay.yaml")
	for path, content := range map[string]string{
		token: "startup-secret\n",
		cfg: fmt.Sprintf("nats: {url: %q}\napi: {base_url: \"http://127.0.0.1:1\"}\nlog: {format: json}\nmetrics: {listen: \"off\"}\n"+
			"routes:\n  - {name: r, stream: S, trigger_id: agtch_r, token: {file: %q}}\n", "nats://"+nowhere, token),
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Env = cleanEnv()
	var out testenv.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "cannot connect to NATS yet") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the worker never started waiting for NATS:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Errorf("SIGTERM during start-up: %v; output:\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the worker did not stop within 10s of SIGTERM")
	}
}
