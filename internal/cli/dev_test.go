package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/testenv"
)

// The README's run command: dev mode starts on nothing but this binary,
// and its log shows events accepted, a route stopped by a 409 and probing
// until the agent becomes runnable, then its event accepted, and two
// dead-lettered with reasons.
// Ctrl-C drains and exits 0.
func TestDevModeShowsAckRetryAndDeadLetter(t *testing.T) {
	if testing.Short() {
		t.Skip("dev mode runs for about 15 s")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	var stdout bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"dev", "--data-dir", t.TempDir(), "--nats-port", "0", "--log-format", "json"}, strings.NewReader(""), &stdout, logs)
	}()
	has := func(msg, key, value string) bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != msg {
				continue
			}
			if v, ok := rec[key]; ok && (value == "" || v == value || jsonNumber(v) == value) {
				return true
			}
		}
		return false
	}
	testenv.Eventually(t, 60*time.Second, "dev mode shows every outcome", func() bool {
		return has("dead-lettered", "reason", "invalid_json") &&
			has("dead-lettered", "reason", "forbidden") &&
			has("route stopped: route-wide condition; probing with single events", "status", "409") &&
			has("probe succeeded: route resumed", "condition", "not_runnable") &&
			has("emulator request", "path", "/v1/workspace_agents/agtch_demo_paused/trigger") &&
			acceptedPaused(logs.String())
	})
	if !strings.Contains(logs.String(), "agentrelay dev is running") || !strings.Contains(logs.String(), "publish -s nats://127.0.0.1:") {
		t.Error("no banner telling how to publish more")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev mode did not stop")
	}
	if !strings.Contains(logs.String(), `"msg":"drained"`) {
		t.Error("dev mode did not drain")
	}
}

// acceptedPaused reports whether the not-runnable agent's event was finally
// accepted (a 202 for its path).
func acceptedPaused(logs string) bool {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"path":"/v1/workspace_agents/agtch_demo_paused/trigger"`) && strings.Contains(line, `"status":202`) {
			return true
		}
	}
	return false
}

func jsonNumber(v any) string {
	if f, ok := v.(float64); ok {
		b, _ := json.Marshal(f)
		return string(b)
	}
	return ""
}

func TestPublishWaitsForTheStreamAck(t *testing.T) {
	n := testenv.StartNATS(t)
	n.CreateStream(t, jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}})
	url := n.Server.ClientURL()
	code, out, errOut := runCLI(t, "", "publish", "-s", url, "p.x", "--input", "hello", "-k", "conv-1", "--msg-id", "pub-1", "-H", "X-Trace: t1")
	if code != 0 || !strings.Contains(out, "stream P sequence 1") {
		t.Fatalf("publish: %d %s %s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "", "publish", "-s", url, "p.x", "--input", "hello", "--msg-id", "pub-1")
	if code != 0 || !strings.Contains(out, "duplicate") {
		t.Errorf("republish with the same id: %d %s", code, out)
	}
	code, out, _ = runCLI(t, "", "publish", "-s", url, "p.x", "--raw", "--input", "plain", "-k", "conv-2", "-n", "2", "--msg-id", "raw")
	if code != 0 || !strings.Contains(out, "sequence 3") {
		t.Errorf("raw: %d %s", code, out)
	}
	s, _ := n.JS.Stream(context.Background(), "P")
	m, err := s.GetMsg(context.Background(), 1)
	if err != nil || string(m.Data) != `{"conversation_key":"conv-1","input":"hello"}` || m.Header.Get("X-Trace") != "t1" || m.Header.Get("Nats-Msg-Id") != "pub-1" {
		t.Errorf("first message: %s %v %v", m.Data, m.Header, err)
	}
	m, err = s.GetMsg(context.Background(), 2)
	if err != nil || string(m.Data) != "plain" || m.Header.Get("Conversation-Key") != "conv-2" || m.Header.Get("Nats-Msg-Id") != "raw-1" {
		t.Errorf("raw message: %s %v %v", m.Data, m.Header, err)
	}
	if code, _, errOut := runCLI(t, "", "publish", "-s", url, "nostream.x", "--input", "x", "--timeout", "1s"); code != 1 || !strings.Contains(errOut, "publishing to nostream.x") {
		t.Errorf("publish to a subject no stream captures: %d %s", code, errOut)
	}
}
