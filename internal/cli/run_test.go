package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// `agentrelay run` whose NATS connection the server closes for good (the
// issue: a protocol line over max_control_line, after which nats.go does
// not reconnect) exits non-zero on its own and says why, so that Kubernetes
// restarts it; it does not wait for a SIGTERM.
func TestRunExitsNonZeroWhenNATSClosesForGood(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	n.CreateStream(t, jetstream.StreamConfig{Name: stream, Subjects: []string{"work.>"}})
	_, apiURL := testenv.Emulator(t, emulator.WithToken(token, okID), emulator.WithTrigger(okID, true))
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A long durable name makes every pull request a long protocol line.
	durable := "agentrelay-" + strings.Repeat("d", 240)
	cfgPath := filepath.Join(dir, "agentrelay.yaml")
	yaml := fmt.Sprintf(`
nats: {url: %q, reconnect_wait: 50ms}
api: {base_url: %q, timeout: 2s}
metrics: {listen: "127.0.0.1:0"}
worker: {drain_grace: 2s, pull_expiry: 3s}
routes:
  - {name: ok, stream: %s, durable: %s, trigger_id: %s, token: {file: %q}}
`, n.Server.ClientURL(), apiURL, stream, durable, okID, tokenFile)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	var stderr testenv.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- Main(ctx, app.Worker{}, []string{"--config", cfgPath, "--log-format", "json", "run"}, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	}()
	testenv.Eventually(t, 30*time.Second, "the worker relays", func() bool { return strings.Contains(stderr.String(), `"msg":"relaying"`) })

	// Back with a limit the CONNECT line fits in and the pull requests do
	// not: the worker reconnects, and its next pull request is refused.
	if err := n.Server.SetMaxControlLine(300); err != nil {
		t.Fatal(err)
	}
	if err := n.Server.Restart(); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != ExitError {
			t.Errorf("exit code %d, want %d", c, ExitError)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the worker did not exit by itself:\n%s", stderr.String())
	}
	out := stderr.String()
	if !strings.Contains(out, `"level":"ERROR"`) || !strings.Contains(out, "error: NATS connection closed for good: nats: maximum control line exceeded") {
		t.Errorf("the cause is not reported:\n%s", out)
	}
	if strings.Contains(out, token) {
		t.Error("the token is in the output")
	}
}
