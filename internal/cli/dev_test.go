//go:build !release

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// The README's run command: dev mode starts on nothing but this binary,
// and its log shows events accepted, a route stopped by a 409 and probing
// until the agent becomes runnable, then its event accepted, and two
// dead-lettered with reasons. Its mapped routes show a CloudEvent mapped
// and accepted, a route serving several agents going on while one of them
// is stopped, and the dead letters of both. Ctrl-C drains and exits 0.
func TestDevModeShowsAckRetryAndDeadLetter(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("dev mode runs for about 15 s")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &testenv.LogBuffer{}
	var stdout bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, app.Worker{}, []string{"dev", "--data-dir", t.TempDir(), "--nats-port", "0", "--log-format", "json"}, strings.NewReader(""), &stdout, logs)
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
			accepted(logs.String(), devPausedID) &&
			// The mapped routes: a CloudEvents route, and one serving
			// several agents, one of them not runnable.
			has("dead-lettered", "reason", "invalid_cloudevent") &&
			has("dead-lettered", "reason", "trigger_not_allowed") &&
			accepted(logs.String(), devTicketsID) && accepted(logs.String(), devSalesID) && accepted(logs.String(), devBillingID) &&
			has("agent stopped: a condition of its own; its events wait for its probes while the route's other agents run", "trigger_id", devLegalID)
	})
	if has("route stopped: route-wide condition; probing with single events", "route", "teams") {
		t.Error("one agent that is not runnable stopped the whole teams route")
	}
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

// accepted reports whether the emulator accepted an event for trigger id
// (a 202 for its path).
func accepted(logs, id string) bool {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"path":"/v1/workspace_agents/`+id+`/trigger"`) && strings.Contains(line, `"status":202`) {
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
	t.Parallel()
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

// startDev runs `agentrelay dev` with args and waits for its banner. It
// returns the log and stop, which cancels dev and returns its exit code;
// the test's cleanup stops it too.
func startDev(t *testing.T, args ...string) (logs *testenv.LogBuffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = &testenv.LogBuffer{}
	var code int
	exited := make(chan struct{})
	go func() {
		code = Main(ctx, app.Worker{}, append([]string{"dev", "--log-format", "json"}, args...), strings.NewReader(""), io.Discard, logs)
		close(exited)
	}()
	stop = func() int {
		cancel()
		select {
		case <-exited:
			return code
		case <-time.After(30 * time.Second):
			t.Error("dev mode did not stop")
			return -1
		}
	}
	t.Cleanup(func() { stop() })
	testenv.Eventually(t, 30*time.Second, "dev mode prints its banner", func() bool {
		select {
		case <-exited:
			t.Fatalf("dev exited with %d before its banner:\n%s", code, logs.String())
		default:
		}
		return strings.Contains(logs.String(), "agentrelay dev is running")
	})
	return logs, stop
}

// freeLoopbackPort returns a port nothing listens on at the moment.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The SRE commands work against a running dev with no hand-written
// configuration: dev writes the one it runs with into its data dir, with
// absolute paths (so it works from any directory), and its banner prints
// the exact commands, with the running binary rather than `go run`.
func TestSREToolsWorkAgainstDevWithItsConfigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs dev mode")
	}
	// A relative --data-dir, and the commands run from another directory.
	t.Chdir(t.TempDir())
	logs, stop := startDev(t, "--data-dir", "dev-data", "--nats-port", "0", "--emulator-port", "0", "--metrics-port", "0")
	t.Chdir(t.TempDir())

	banner := logs.String()
	m := regexp.MustCompile(`(?m)^  (\S+) status --config (\S+)$`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("the banner names no `status --config` command:\n%s", banner)
	}
	bin, cfgFile := m[1], m[2]
	if exe, err := os.Executable(); err != nil || bin != exe {
		t.Errorf("the banner's commands run %q, want the running executable %q (%v)", bin, exe, err)
	}
	if strings.Contains(banner, "go run") {
		t.Error("the banner suggests `go run`, which compiles for seconds at every command")
	}
	if !filepath.IsAbs(cfgFile) || filepath.Base(filepath.Dir(cfgFile)) != "dev-data" || filepath.Base(cfgFile) != devConfigFile {
		t.Errorf("configuration file %s: want %s in the data dir, as an absolute path", cfgFile, devConfigFile)
	}
	for _, cmd := range []string{"dlq list --config " + cfgFile, "publish -s nats://127.0.0.1:"} {
		if !strings.Contains(banner, bin+" "+cmd) {
			t.Errorf("the banner has no %q", bin+" "+cmd)
		}
	}

	// status sees the demo's dead letters, through the file.
	var rep statusReport
	routes := len(devConfig("", "", "", "").Routes)
	testenv.Eventually(t, 60*time.Second, "status --config shows the demo's dead letters", func() bool {
		code, out, errOut := runCLI(t, "", "status", "--json", "--config", cfgFile)
		switch code {
		case 0:
		case ExitConfig:
			t.Fatalf("status --config %s cannot use dev's configuration: %s", cfgFile, errOut)
		default:
			t.Logf("status: exit %d: %s", code, errOut)
			return false
		}
		rep = statusReport{}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("status --json: %v: %s", err, out)
		}
		dl := map[string]map[string]int{}
		for _, r := range rep.Routes {
			dl[r.Route] = r.DeadLetters
		}
		return len(rep.Routes) == routes && dl["support"]["invalid_json"] > 0 && dl["locked"]["forbidden"] > 0
	})
	// status names the teams route's stopped agent (the legal agent is not
	// runnable), why and its next probe; the route itself runs.
	testenv.Eventually(t, 60*time.Second, "status shows the legal agent stopped", func() bool {
		code, out, _ := runCLI(t, "", "status", "--json", "--config", cfgFile)
		rep = statusReport{}
		if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
			return false
		}
		for _, r := range rep.Routes {
			for _, a := range r.Replicas {
				if r.Route == "teams" && a.Status != nil && a.Status.AgentsStopped == 1 && len(a.Status.Agents) == 1 {
					ag := a.Status.Agents[0]
					return ag.TriggerID == devLegalID && ag.Health == "not_runnable" && ag.Cause != nil && ag.Cause.Status == 409 &&
						a.Status.Health == "healthy"
				}
			}
		}
		return false
	})
	if code, out, errOut := runCLI(t, "", "status", "--config", cfgFile); code != 0 ||
		!regexp.MustCompile(`(?m)^  stopped agents on replica .*: 1\n    `+devLegalID+`: not_runnable since \S+ \(conflict, 409: `).MatchString(out) ||
		!regexp.MustCompile(`(?m)^teams .*healthy \(1 replica\); 1 agent stopped`).MatchString(out) {
		t.Errorf("status --config: exit %d, no stopped legal agent under the teams route:\n%s%s", code, out, errOut)
	}

	code, out, errOut := runCLI(t, "", "dlq", "list", "--config", cfgFile)
	if code != 0 || !strings.Contains(out, "forbidden") || !strings.Contains(out, "invalid_json") {
		t.Errorf("dlq list --config %s: exit %d\n%s%s", cfgFile, code, out, errOut)
	}

	if code := stop(); code != 0 {
		t.Errorf("dev exit code %d", code)
	}
}

// The configuration file holds what dev sets and nothing else, and reads
// back as exactly the configuration dev runs with.
func TestDevConfigFileIsTheConfigurationInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, devConfigFile)
	spec := devConfig("nats://127.0.0.1:4222", "http://127.0.0.1:8089", filepath.Join(dir, "agent-token"), "127.0.0.1:9090")
	got, err := writeDevConfig(path, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := *spec
	want.ApplyDefaults()
	if !reflect.DeepEqual(got, &want) {
		t.Errorf("read back:\n%+v\nwant:\n%+v", got, &want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, noise := range []string{"null", ": 0\n", ": 0s\n", ": false\n", `: ""`, "{}", "[]"} {
		if strings.Contains(string(data), noise) {
			t.Errorf("the file carries an unset field (%q):\n%s", noise, data)
		}
	}
	if strings.Contains(string(data), devToken) {
		t.Error("the file holds the token; it must only name the token file")
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm()&0o077 != 0 {
		t.Errorf("the file must be private to its owner: %v %v", info.Mode(), err)
	}
}

// --emulator-port and --metrics-port put the emulator and the listener
// where asked; a port asked for that is taken is an error naming the
// flag, not a silent move elsewhere.
func TestDevPortsAreFlags(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs dev mode")
	}
	emu, metrics := freeLoopbackPort(t), freeLoopbackPort(t)
	logs, _ := startDev(t, "--data-dir", t.TempDir(), "--nats-port", "0", "--no-demo",
		"--emulator-port", strconv.Itoa(emu), "--metrics-port", strconv.Itoa(metrics))
	for _, want := range []string{fmt.Sprintf("http://127.0.0.1:%d ", emu), fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the banner has no %q:\n%s", want, logs.String())
		}
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)
	for _, flag := range []string{"--emulator-port", "--metrics-port"} {
		code, _, errOut := runCLI(t, "", "dev", "--data-dir", t.TempDir(), "--nats-port", "0", "--no-demo", flag, port)
		if code == 0 || !strings.Contains(errOut, port) {
			t.Errorf("dev %s %s (taken): exit %d: %s", flag, port, code, errOut)
		}
	}
}
