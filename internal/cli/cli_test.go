package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/testenv"
	"github.com/agentrelay/agentrelay/internal/testenv/wait"
)

const (
	token   = "tok-cli-DO-NOT-LOG-7e1"
	okID    = "agtch_cli_ok"
	lockID  = "agtch_cli_locked"
	stream  = "WORK"
	dlqName = "AGENTRELAY_DLQ"
)

// stack is NATS, the emulator, a configuration file and, once started, a
// worker — what an SRE's commands run against.
type stack struct {
	t       *testing.T
	nats    *testenv.NATS
	emu     *emulator.Emulator
	cfgPath string
	cfg     *config.Config
	logs    *testenv.LogBuffer
	metrics string
	stop    func()

	mu   sync.Mutex
	last map[string]uint64 // route -> the highest stream sequence published to it
}

func newStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{t: t, nats: testenv.StartNATS(t)}
	s.emu, _ = testenv.Emulator(t, emulator.WithToken(token, okID), emulator.WithTrigger(okID, true), emulator.WithTrigger(lockID, true))
	apiURL := emuURL(t, s.emu)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cfgPath = filepath.Join(dir, "agentrelay.yaml")
	yaml := fmt.Sprintf(`
nats: {url: %q}
api: {base_url: %q, timeout: 2s}
metrics: {listen: "127.0.0.1:0"}
worker: {drain_grace: 2s, pull_expiry: 3s, lag_interval: 100ms}
defaults:
  ack_wait: 10s
  retry: {max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms}
streams:
  - {name: %s, subjects: ["work.>"]}
routes:
  - {name: ok, stream: %s, subjects: ["work.ok.>"], trigger_id: %s, token: {file: %q}}
  - {name: locked, stream: %s, subjects: ["work.locked.>"], trigger_id: %s, token: {file: %q}}
`, s.nats.Server.ClientURL(), apiURL, stream, stream, okID, tokenFile, stream, lockID, tokenFile)
	if err := os.WriteFile(s.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	return s
}

func emuURL(t *testing.T, emu *emulator.Emulator) string {
	srv, err := emu.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.URL
}

// startWorker runs the worker in-process with JSON logs captured.
func (s *stack) startWorker() {
	s.t.Helper()
	s.logs = &testenv.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, s.cfg, log, app.Options{Started: func(a string) { started <- a }}) }()
	select {
	case s.metrics = <-started:
	case err := <-done:
		s.t.Fatalf("worker did not start: %v", err)
	case <-time.After(15 * time.Second):
		s.t.Fatal("worker did not start")
	}
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			s.t.Errorf("worker: %v", err)
		}
	}
	s.t.Cleanup(s.stop)
}

// cli runs agentrelay with args (the configuration is passed) and returns
// the exit code, stdout and stderr.
func (s *stack) cli(stdin string, args ...string) (int, string, string) {
	s.t.Helper()
	return runCLI(s.t, stdin, append([]string{"--config", s.cfgPath}, args...)...)
}

func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Main(ctx, app.Worker{}, args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func (s *stack) publish(subject, body, id string) {
	s.t.Helper()
	ack := s.nats.Publish(s.t, &nats.Msg{Subject: subject, Data: []byte(body)}, jetstream.WithMsgID(id))
	if route, ok := strings.CutPrefix(subject, "work."); ok {
		route, _, _ = strings.Cut(route, ".")
		s.mu.Lock()
		if s.last == nil {
			s.last = map[string]uint64{}
		}
		s.last[route] = max(s.last[route], ack.Sequence)
		s.mu.Unlock()
	}
}

// settled waits until the routes' consumers owe nothing and their ack
// floors are past everything published to them. (The pending counts alone
// can read 0 before they count a message just published.)
func (s *stack) settled(routes ...string) {
	s.t.Helper()
	testenv.Eventually(s.t, 20*time.Second, "routes settled", func() bool {
		for _, r := range routes {
			c, err := s.nats.JS.Consumer(context.Background(), stream, "agentrelay-"+r)
			if err != nil {
				return false
			}
			info, err := c.Info(context.Background())
			s.mu.Lock()
			last := s.last[r]
			s.mu.Unlock()
			if err != nil || info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream < last {
				return false
			}
		}
		return true
	})
}

func (s *stack) dlqCount() uint64 {
	st, err := s.nats.JS.Stream(context.Background(), dlqName)
	if err != nil {
		return 0
	}
	info, err := st.Info(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.Msgs
}

// The SRE's incident, every step through the commands: dead letters pile up
// (the token may not call the agent), status shows them by reason, dlq list
// and show say why, the permission is fixed, replay sends them again with
// their original keys, and the route drains to zero.
func TestSREStoryFindFixReplayDrain(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	for i := range 5 {
		s.publish("work.locked.x", fmt.Sprintf(`{"input":"locked %d"}`, i), fmt.Sprintf("lk-%d", i))
	}
	s.publish("work.ok.x", `{"input":"fine"}`, "ok-1")
	s.settled("ok", "locked")

	code, out, errOut := s.cli("", "status")
	if code != 0 || !strings.Contains(out, "forbidden=5") || !strings.Contains(out, "dead-letter stream AGENTRELAY_DLQ: 5 messages") {
		t.Fatalf("status: %d\n%s%s", code, out, errOut)
	}
	code, out, _ = s.cli("", "status", "--json")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
		t.Fatalf("status --json: %d %v\n%s", code, err, out)
	}
	for _, r := range rep.Routes {
		if r.Route == "locked" && (r.DeadLetters["forbidden"] != 5 || r.Pending != 0 || r.AckPending != 0) {
			t.Errorf("status --json locked route: %+v", r)
		}
	}

	code, out, _ = s.cli("", "dlq", "list", "--route", "locked", "--reason", "forbidden")
	if code != 0 || strings.Count(out, "forbidden") != 5 || !strings.Contains(out, "403") || !strings.Contains(out, `{"input":"locked 0"}`) {
		t.Fatalf("dlq list: %d\n%s", code, out)
	}
	code, out, _ = s.cli("", "dlq", "list", "--json", "--limit", "1")
	var first letterJSON
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &first); code != 0 || err != nil {
		t.Fatalf("dlq list --json: %v\n%s", err, out)
	}
	code, out, _ = s.cli("", "dlq", "show", fmt.Sprint(first.Seq))
	if code != 0 || !strings.Contains(out, "reason           forbidden") || !strings.Contains(out, "Agentrelay-Error:") || !strings.Contains(out, "may not trigger") {
		t.Fatalf("dlq show: %d\n%s", code, out)
	}

	code, out, _ = s.cli("", "dlq", "replay", "--route", "locked", "--dry-run")
	if code != 0 || strings.Count(out, "would replay") != 5 || s.dlqCount() != 5 {
		t.Fatalf("dry run: %d\n%s", code, out)
	}

	s.emu.AddToken(token, lockID) // the fix
	code, out, errOut = s.cli("", "dlq", "replay", "--route", "locked", "--reason", "forbidden")
	if code != 0 || !strings.Contains(out, "replayed 5 dead letters") {
		t.Fatalf("replay: %d\n%s%s", code, out, errOut)
	}
	s.settled("locked")
	for i := range 5 {
		if n := s.emu.Accepted(lockID, fmt.Sprintf("lk-%d", i)); n != 1 {
			t.Errorf("lk-%d accepted %d times, want 1 (with its original key)", i, n)
		}
	}
	if s.dlqCount() != 0 {
		t.Errorf("%d dead letters left", s.dlqCount())
	}
	code, out, _ = s.cli("", "status")
	if code != 0 || !strings.Contains(out, "dead-letter stream AGENTRELAY_DLQ: 0 messages") {
		t.Errorf("status after replay: %s", out)
	}
}

// A replay interrupted half-way — including one dead letter whose replay was
// published but not yet deleted — can simply be run again: every event is
// accepted once, nothing is left behind.
func TestInterruptedReplayCanBeRerun(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	const n = 12
	for i := range n {
		s.publish("work.locked.x", fmt.Sprintf(`{"input":"%d"}`, i), fmt.Sprintf("ir-%d", i))
	}
	s.settled("locked")
	if s.dlqCount() != n {
		t.Fatalf("%d dead letters", s.dlqCount())
	}
	s.emu.AddToken(token, lockID)

	// Interrupted by Ctrl-C (the context) part-way, at 10 replays/s.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		testenv.Eventually(t, 20*time.Second, "some replayed", func() bool { return s.dlqCount() <= n-3 })
		cancel()
	}()
	var out, errOut bytes.Buffer
	code := Main(ctx, app.Worker{}, []string{"--config", s.cfgPath, "dlq", "replay", "--rate", "10"}, strings.NewReader(""), &out, &errOut)
	if code == 0 || !strings.Contains(out.String(), "run the same command again") {
		t.Fatalf("interrupted replay: code %d\n%s%s", code, out.String(), errOut.String())
	}
	left := s.dlqCount()
	if left == 0 || left == n {
		t.Fatalf("%d left: the interruption did not land mid-way", left)
	}

	// And one dead letter replayed but not deleted, as if killed between
	// the publish ack and the delete.
	tc := s.toolConn()
	store := openStoreT(t, tc)
	l := firstLetter(t, store)
	m, err := store.ReplayMsg(l, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.js.PublishMsg(context.Background(), m, jetstream.WithMsgID(replayID(l))); err != nil {
		t.Fatal(err)
	}

	code, outS, errS := s.cli("", "dlq", "replay")
	if code != 0 || !strings.Contains(outS, "had already been replayed") {
		t.Fatalf("rerun: %d\n%s%s", code, outS, errS)
	}
	s.settled("locked")
	for i := range n {
		if c := s.emu.Accepted(lockID, fmt.Sprintf("ir-%d", i)); c != 1 {
			t.Errorf("ir-%d accepted %d times, want 1", i, c)
		}
	}
	if s.dlqCount() != 0 {
		t.Errorf("%d dead letters left", s.dlqCount())
	}
}

func TestPurgeAsksFirst(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	for i := range 3 {
		s.publish("work.locked.x", `{"input":"x"}`, fmt.Sprintf("pg-%d", i))
	}
	s.publish("work.ok.x", `not json`, "pg-poison")
	s.settled("ok", "locked")
	if code, _, _ := s.cli("n\n", "dlq", "purge", "--reason", "forbidden"); code == 0 || s.dlqCount() != 4 {
		t.Fatalf("purge without confirmation deleted something (code %d, %d left)", code, s.dlqCount())
	}
	if code, out, _ := s.cli("y\n", "dlq", "purge", "--reason", "forbidden"); code != 0 || !strings.Contains(out, "deleted 3") || s.dlqCount() != 1 {
		t.Fatalf("purge: %d %s (%d left)", code, out, s.dlqCount())
	}
	if code, out, _ := s.cli("", "dlq", "purge", "--yes"); code != 0 || !strings.Contains(out, "deleted 1") || s.dlqCount() != 0 {
		t.Fatalf("purge --yes: %d %s", code, out)
	}
}

func TestPauseAndResumeARoute(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	if code, out, errOut := s.cli("", "pause", "ok", "--until", "1h"); code != 0 || !strings.Contains(out, "paused route ok") {
		t.Fatalf("pause: %d %s %s", code, out, errOut)
	}
	s.publish("work.ok.x", `{"input":"wait"}`, "paused-1")
	time.Sleep(time.Second)
	if s.emu.LedgerLen() != 0 {
		t.Fatal("delivered while paused")
	}
	if code, out, _ := s.cli("", "status"); code != 0 || !strings.Contains(out, "until ") {
		t.Errorf("status does not show the pause:\n%s", out)
	}
	if code, out, _ := s.cli("", "resume", "ok"); code != 0 || !strings.Contains(out, "resumed route ok") {
		t.Fatalf("resume: %d %s", code, out)
	}
	if code, out, errOut := s.cli("", "resume", "ok"); code != 1 || strings.Contains(out, "resumed") || !strings.Contains(errOut, "route ok (consumer agentrelay-ok on WORK) is not paused: nothing to resume") {
		t.Errorf("resume of a route that is not paused: %d\n%s%s", code, out, errOut)
	}
	s.settled("ok")
	if s.emu.Accepted(okID, "paused-1") != 1 {
		t.Error("not delivered after resume")
	}
}

func TestToolsRefuseClearlyWhenThingsAreMissing(t *testing.T) {
	t.Parallel()
	s := newStack(t) // no worker: no consumers, no dead-letter stream yet
	code, out, errOut := s.cli("", "status")
	if code != 1 || !strings.Contains(out, "stream does not exist") {
		t.Errorf("status without streams: %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := s.cli("", "pause", "ok"); code != 1 || !strings.Contains(errOut, "stream WORK does not exist") {
		t.Errorf("pause: %d %s", code, errOut)
	}
	if code, _, errOut := s.cli("", "pause", "nope"); code != ExitConfig || !strings.Contains(errOut, `no route "nope"`) {
		t.Errorf("pause unknown route: %d %s", code, errOut)
	}
	if code, _, errOut := s.cli("", "dlq", "list"); code != 1 || !strings.Contains(errOut, "dead-letter stream does not exist") {
		t.Errorf("dlq list: %d %s", code, errOut)
	}
	if code, _, errOut := s.cli("", "dlq", "list", "--since", "yesterday-ish"); code != ExitConfig || !strings.Contains(errOut, "--since") {
		t.Errorf("bad --since: %d %s", code, errOut)
	}
}

// After a known run, /metrics holds the known numbers, and the logs carry
// every message's identity but never the token or a message body.
func TestMetricsAndLogsAfterAKnownRun(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.publish("work.ok.a", `{"input":"secret body one"}`, "m-1")
	s.publish("work.ok.b", `{"input":"secret body two"}`, "m-2")
	s.publish("work.ok.c", `{"inptu":"secret body three"}`, "m-3")
	s.publish("work.locked.d", `{"input":"secret body four"}`, "m-4")
	s.settled("ok", "locked")

	want := []string{
		`agentrelay_messages_received_total{route="ok"} 3`,
		`agentrelay_messages_received_total{route="locked"} 1`,
		`agentrelay_messages_finished_total{class="accepted",outcome="acked",route="ok"} 2`,
		`agentrelay_messages_finished_total{class="poison",outcome="dead_lettered",route="ok"} 1`,
		`agentrelay_messages_finished_total{class="forbidden",outcome="dead_lettered",route="locked"} 1`,
		`agentrelay_dead_letters_total{reason="invalid_json",route="ok"} 1`,
		`agentrelay_dead_letters_total{reason="forbidden",route="locked"} 1`,
		`agentrelay_trigger_requests_total{code="202",error="",route="ok"} 2`,
		`agentrelay_trigger_requests_total{code="403",error="",route="locked"} 1`,
		`agentrelay_trigger_duration_seconds_count{route="ok"} 2`,
		`agentrelay_message_processing_seconds_count{outcome="acked",route="ok"} 2`,
		`agentrelay_message_delivery_attempt_bucket{outcome="acked",route="ok",le="1"} 2`,
		`agentrelay_messages_in_flight{route="ok"} 0`,
		`agentrelay_messages_in_flight_limit{route="ok"} 64`,
		`agentrelay_route_health{route="ok",state="healthy"} 1`,
		`agentrelay_route_health{route="ok",state="outage"} 0`,
		`agentrelay_consumer_ack_pending_messages{route="locked"} 0`,
		`agentrelay_ready 1`,
		`agentrelay_nats_connected 1`,
		`agentrelay_build_info{`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	}
	// The lag gauges are refreshed every lag_interval: wait until a scrape
	// shows the settled state, then report what is still missing.
	var body string
	wait.ForNil(t, 10*time.Second, "/metrics showing every series", func() error {
		body = scrape(t, "http://"+s.metrics+"/metrics")
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("lacks %s", strings.Join(missing, ", "))
		}
		return nil
	})
	if strings.Contains(body, token) || strings.Contains(body, "m-1") || strings.Contains(body, "work.ok") {
		t.Error("/metrics carries a token, a message id or a subject")
	}
	if code := get(t, "http://"+s.metrics+"/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if code := get(t, "http://"+s.metrics+"/readyz"); code != 200 {
		t.Errorf("/readyz %d", code)
	}

	s.stop()
	logs := s.logs.String()
	if strings.Contains(logs, token) || strings.Contains(logs, "secret body") {
		t.Fatalf("logs carry the token or a message body:\n%s", logs)
	}
	perMessage := 0
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		if _, ok := rec["stream_seq"]; !ok {
			continue
		}
		perMessage++
		for _, k := range []string{"route", "stream", "stream_seq", "attempt", "idempotency_key", "trigger_id"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("message log line without %s: %s", k, line)
			}
		}
	}
	if perMessage < 4 {
		t.Errorf("%d per-message log lines, want one per message (4)", perMessage)
	}
	for _, want := range []string{`"msg":"draining"`, `"msg":"drained"`, `"msg":"connected to NATS"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Replaying letters whose cause is not fixed yet dead-letters them anew;
// the replay still ends after one pass over what was there when it started
// (it used to reach the new letters and go round for ever).
func TestReplayOfStillFailingLettersEnds(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	const n = 300 // more than one scan batch
	for i := range n {
		s.publish("work.locked.x", fmt.Sprintf(`{"input":"%d"}`, i), fmt.Sprintf("sf-%d", i))
	}
	s.settled("locked")
	code, out, errOut := s.cli("", "dlq", "replay", "--rate", "2000")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("replayed %d dead letters", n)) {
		t.Fatalf("replay: %d\n%s%s", code, out, errOut)
	}
	s.settled("locked")
	if got := s.dlqCount(); got != n {
		t.Errorf("%d dead letters after the replay, want the same %d back", got, n)
	}
	if calls := s.emu.Stats().ByStatus[403]; calls != 2*n {
		t.Errorf("%d calls answered 403, want %d (each event twice: once, and once replayed)", calls, 2*n)
	}
}

// A route stopped by route health shows in status for the whole fleet: the
// consumer's pause, marked as route health's, until the first probe gets
// through; then it is gone.
func TestStatusShowsARouteStoppedByRouteHealth(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.emu.SetRunnable(okID, false)
	s.publish("work.ok.x", `{"input":"wait"}`, "health-1")
	testenv.Eventually(t, 10*time.Second, "status shows route health's pause", func() bool {
		_, out, _ := s.cli("", "status")
		return strings.Contains(out, "route health, probing")
	})
	code, out, _ := s.cli("", "status", "--json", "--wait", "10s") // room for a loaded machine; it stops once every replica answered
	if code != 0 || !strings.Contains(out, `"paused_by":"route_health"`) || !strings.Contains(out, `"health":"not_runnable"`) {
		t.Errorf("status --json does not say whose pause it is, and the replica's condition:\n%s", out)
	}
	// Why, as the replica holding it stopped says: the condition, since
	// when, the next probe, and which replica says so.
	_, out, _ = s.cli("", "status", "--wait", "10s")
	if !strings.Contains(out, "not_runnable on 1 of 1") || !regexp.MustCompile(`not_runnable since \S+Z.*next probe \S+Z.* on replica \w+ \(host `).MatchString(out) {
		t.Errorf("status does not say why the route is stopped, and on which replica:\n%s", out)
	}
	s.emu.SetRunnable(okID, true)
	s.settled("ok")
	if s.emu.Accepted(okID, "health-1") != 1 {
		t.Error("not accepted after the agent became runnable")
	}
	testenv.Eventually(t, 5*time.Second, "the pause gone from status", func() bool {
		_, out, _ := s.cli("", "status")
		return !strings.Contains(out, "route health")
	})
}

// status names an ordered route's owner: the replica the server pinned it to.
func TestStatusShowsWhoOwnsAnOrderedRoute(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	b, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var ordered string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "{name: ok,") {
			ordered = strings.TrimSuffix(strings.NewReplacer("{name: ok,", "{name: thread,", "work.ok.>", "work.thread.>").Replace(line), "}") + ", ordering: conversation_key}"
		}
	}
	if err := os.WriteFile(s.cfgPath, append(b, []byte(ordered+"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.cfg, err = config.Load(s.cfgPath); err != nil {
		t.Fatal(err)
	}
	s.startWorker()
	s.publish("work.thread.x", `{"input":"first","conversation_key":"c1"}`, "thread-1")
	s.settled("thread")
	code, out, _ := s.cli("", "status")
	if code != 0 || !strings.Contains(out, "route thread is ordered by conversation_key: one replica owns it (pinned client ") {
		t.Errorf("status does not name the ordered route's owner:\n%s", out)
	}
	_, out, _ = s.cli("", "status", "--json")
	if !strings.Contains(out, `"ordering":"conversation_key"`) || !strings.Contains(out, `"owner":"`) {
		t.Errorf("status --json lacks ordering and owner:\n%s", out)
	}
}

// Every command that talks to NATS gives up within --connect-timeout (2 s
// by default) when NATS cannot be reached, naming the servers (with any
// credentials redacted), and says what to check.
func TestNATSFacingCommandsFailFastWhenNATSIsUnreachable(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	b, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	dead := regexp.MustCompile(`nats: \{url: "[^"]*"\}`).ReplaceAllString(string(b), `nats: {url: "nats://127.0.0.1:1"}`)
	if err := os.WriteFile(s.cfgPath, []byte(dead), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		max  time.Duration
	}{
		{[]string{"status"}, 4 * time.Second}, // the default, 2 s, with room for a loaded machine
		{[]string{"--connect-timeout", "300ms", "dlq", "list"}, 2 * time.Second},
		{[]string{"--connect-timeout", "300ms", "events", "show", "x"}, 2 * time.Second},
		{[]string{"--connect-timeout", "300ms", "pause", "ok"}, 2 * time.Second},
		{[]string{"--connect-timeout", "300ms", "resume", "ok"}, 2 * time.Second},
		{[]string{"--connect-timeout", "300ms", "publish", "work.ok.x", "--input", "x"}, 2 * time.Second},
		{[]string{"--connect-timeout", "300ms", "publish", "work.ok.x", "--input", "x", "--server", "nats://sre:s3cret-PW@127.0.0.1:1"}, 2 * time.Second},
	} {
		start := time.Now()
		var code int
		var out, errOut string
		if slices.Contains(tc.args, "--server") {
			code, out, errOut = runCLI(t, "", tc.args...) // no configuration: --server is used
		} else {
			code, out, errOut = s.cli("", tc.args...)
		}
		took := time.Since(start)
		if code != 1 || took > tc.max || !regexp.MustCompile(`cannot reach NATS at nats://(REDACTED@)?127\.0\.0\.1:1 after `).MatchString(errOut) ||
			!strings.Contains(errOut, "hint: is NATS running there") || strings.Contains(out+errOut, "s3cret-PW") {
			t.Errorf("%v: exit %d after %v (at most %v)\n%s%s", tc.args, code, took, tc.max, out, errOut)
		}
	}
	if code, _, errOut := s.cli("", "--connect-timeout", "0s", "status"); code != 2 || !strings.Contains(errOut, "--connect-timeout 0s: must be from 100ms to 5m0s") {
		t.Errorf("--connect-timeout 0s: %d %s", code, errOut)
	}
}

// Shell completion offers the configuration's routes, the dead-letter
// reasons, the dead letters in NATS and the streams of STREAM:SEQ.
func TestCompletionOffersRoutesReasonsLettersAndStreams(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.publish("work.locked.x", `{"input":"x"}`, "comp-1")
	s.settled("locked")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "pause", ""}, []string{"ok\tstream WORK", "locked\tstream WORK"}},
		{[]string{"__complete", "resume", "lo"}, []string{"locked\t"}},
		{[]string{"__complete", "dlq", "list", "--route", ""}, []string{"ok\t", "locked\t"}},
		{[]string{"__complete", "dlq", "replay", "--reason", "for"}, []string{"forbidden\t"}},
		{[]string{"__complete", "dlq", "show", ""}, []string{"1\tlocked forbidden "}},
		{[]string{"__complete", "events", "show", ""}, []string{"WORK:"}},
	} {
		code, out, errOut := s.cli("", tc.args...)
		for _, w := range tc.want {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("%v: exit %d, want %q offered:\n%s%s", tc.args[1:], code, w, out, errOut)
			}
		}
	}
	if _, out, _ := s.cli("", "__complete", "pause", "ok", ""); strings.Contains(out, "locked") {
		t.Errorf("pause takes one route, yet a second was offered:\n%s", out)
	}
}
