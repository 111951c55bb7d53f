package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/agentrelay/agentrelay/deploy/internal/promcheck"
	"github.com/agentrelay/agentrelay/internal/app"
)

// targetLabels are the labels the Prometheus Operator's service discovery
// adds to every series scraped through a ServiceMonitor.
var targetLabels = []string{"namespace", "pod", "job", "instance", "service", "container", "endpoint"}

// The alerts, the dashboard and the manifests are checked against the real
// binary, built as the image builds it: `agentrelay dev` produces traffic
// (accepted, retried and dead-lettered messages) so that labelled series
// exist, and its /metrics is the catalogue every query must stay within.
// Then the worker is started the way the pod starts it, against the
// NATS-side definitions, and probed the way the kubelet and Prometheus do.
func TestAgainstARunningWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the worker")
	}
	d := renderExample(t)
	bin := buildLikeTheImage(t, "v0.0.0-worker-test", "worker-test")
	// The traffic comes from `agentrelay dev`, which the release build the
	// image carries leaves out: a development build of the same source.
	devBin := filepath.Join(t.TempDir(), "agentrelay-dev")
	if out, err := exec.Command(goTool(t), "build", "-C", repoRoot, "-o", devBin, "./cmd/agentrelay").CombinedOutput(); err != nil {
		t.Fatalf("building agentrelay for dev: %v\n%s", err, out)
	}

	// Free ports only: a default port (9090) may be taken by another process
	// on the machine, and a scrape must reach this worker.
	dev := startProcess(t, devBin, []string{"dev", "--nats-port", "0", "--metrics-port", "0", "--emulator-port", "0", "--data-dir", t.TempDir(), "--log-format", "json"}, nil)
	natsURL := dev.logField(t, "connected to NATS", "server", 30*time.Second)
	metricsAddr := dev.logField(t, "serving /metrics, /healthz and /readyz", "addr", 30*time.Second)
	scope := promcheck.Scope{
		Catalog:      scrapeAfterTraffic(t, "http://"+metricsAddr+"/metrics"),
		TargetLabels: targetLabels,
		Synthetic:    []string{"up"},
	}

	t.Run("alert expressions select what the worker exports", func(t *testing.T) { checkAlertsAgainst(t, d, scope) })
	t.Run("dashboard queries select what the worker exports", func(t *testing.T) { checkDashboardAgainst(t, scope) })
	t.Run("the pod starts, answers its probes and drains in time", func(t *testing.T) { runPodAsDeployed(t, d, bin, natsURL) })
}

// scrapeAfterTraffic scrapes url until the dev demo's messages have been
// acked, retried and dead-lettered, and its agent that is not runnable has
// been stopped, and returns that scrape.
func scrapeAfterTraffic(t *testing.T, url string) *promcheck.Catalog {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cat, err := scrape(url)
		if err == nil && cat.Has("agentrelay_dead_letters_total") &&
			cat.HasValue("agentrelay_trigger_requests_total", "code", "202") &&
			cat.HasValue("agentrelay_messages_finished_total", "outcome", "acked") &&
			cat.HasValue("agentrelay_messages_finished_total", "outcome", "retried") &&
			cat.HasValue("agentrelay_messages_finished_total", "outcome", "dead_lettered") &&
			cat.Has("agentrelay_agent_stopped") && cat.Has("agentrelay_route_agents_stopped") {
			return cat
		}
		if time.Now().After(deadline) {
			t.Fatalf("no acked, retried and dead-lettered messages and no stopped agent in %s after 30s (last error: %v)", url, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func scrape(url string) (*promcheck.Catalog, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return promcheck.ParseExposition(resp.Body)
}

// runPodAsDeployed lays out the pod's volumes in a temporary directory,
// defines the streams and consumers from deploy/nats/cli on the dev NATS
// server, starts the binary with the container's args and environment, and
// checks what the kubelet and Prometheus would: the probes answer, /metrics
// is served, agentrelay left the operator's consumers as they were, and
// SIGTERM ends the process with exit 0 within the grace period.
func runPodAsDeployed(t *testing.T, d deployment, bin, natsURL string) {
	root := t.TempDir()
	podPath := layOutVolumes(t, d, root)

	js := connectJetStream(t, natsURL)
	defineNATSResources(t, js)
	before := consumerConfigs(t, js, d)

	args := make([]string, len(d.container.Args))
	for i, a := range d.container.Args {
		args[i] = podPath(a)
	}
	// The pod's environment, except where the test must differ: the NATS
	// server, a free port, and logs the test can read.
	overrides := map[string]string{
		"AGENTRELAY_NATS_URL":       natsURL,
		"AGENTRELAY_METRICS_LISTEN": "127.0.0.1:0",
		"AGENTRELAY_LOG_FORMAT":     "json",
	}
	var env []string
	for _, e := range d.container.Env {
		if _, ok := overrides[e.Name]; !ok && e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	for k, v := range overrides {
		env = append(env, k+"="+v)
	}
	pod := startProcess(t, bin, args, env)
	addr := pod.logField(t, "serving /metrics, /healthz and /readyz", "addr", 30*time.Second)

	c := d.container
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", name)
			continue
		}
		if err := waitOK("http://"+addr+p.HTTPGet.Path, 15*time.Second); err != nil {
			t.Errorf("%s probe: %v", name, err)
		}
	}
	for _, ep := range only[*monitoringv1.ServiceMonitor](t, d.objs).Spec.Endpoints {
		cat, err := scrape("http://" + addr + ep.Path)
		if err != nil {
			t.Errorf("ServiceMonitor path %s: %v", ep.Path, err)
		} else if !cat.HasValue("agentrelay_build_info", "version", "v0.0.0-worker-test") {
			t.Errorf("ServiceMonitor path %s: no agentrelay_build_info of the stamped version", ep.Path)
		}
	}

	after := consumerConfigs(t, js, d)
	for key, b := range before {
		if a := after[key]; !reflect.DeepEqual(a, b) {
			t.Errorf("consumer %s: agentrelay changed the consumer deploy/nats defines:\nbefore %s\n after %s", key, toJSON(b), toJSON(a))
		}
	}

	grace := time.Duration(*d.pod.TerminationGracePeriodSeconds) * time.Second
	code, took := pod.stop(t, syscall.SIGTERM, grace)
	if code != 0 {
		t.Errorf("after SIGTERM the worker exited %d, want 0\n%s", code, pod.output())
	}
	t.Logf("drained and exited %d in %v (grace period %v)", code, took.Round(time.Millisecond), grace)
}

// layOutVolumes writes the pod's ConfigMap volumes under root and creates
// the files the configuration reads from Secret volumes (the Secret itself
// is created out of band). It returns the function that maps a path in the
// pod to the same path under root; ConfigMap contents are mapped the same
// way, so that the configuration names the laid-out files.
func layOutVolumes(t *testing.T, d deployment, root string) func(string) string {
	t.Helper()
	podPath := func(s string) string {
		for _, m := range d.container.VolumeMounts {
			s = strings.ReplaceAll(s, m.MountPath, filepath.Join(root, m.MountPath))
		}
		return s
	}
	secretFiles := map[string]bool{}
	for _, f := range filesTheWorkerReads(d.config) {
		secretFiles[f] = true
	}
	for _, m := range d.container.VolumeMounts {
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		vol := volumeNamed(t, d, m.Name)
		switch {
		case vol.ConfigMap != nil:
			for k, v := range configMapNamed(t, d, vol.ConfigMap.Name).Data {
				writeFile(t, filepath.Join(dir, k), podPath(v))
			}
		case vol.Secret != nil:
			for f := range secretFiles {
				if strings.HasPrefix(f, m.MountPath+"/") {
					writeFile(t, filepath.Join(root, f), "deploy-test-secret\n")
				}
			}
		}
	}
	return podPath
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func connectJetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("deploy-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// defineNATSResources applies deploy/nats/cli as `nats stream add` and
// `nats consumer add` would, so that a definition the server refuses fails
// here. The test server is a single node: the streams are the single-node
// ones, as they are.
func defineNATSResources(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := loadNATSDefinitions(t)
	for name, cfg := range n.singleNodeStreams {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			t.Fatalf("%s: the server refuses stream %s: %v", n.cliFiles["single-node/"+name], name, err)
		}
	}
	for key, cfg := range n.cliConsumers {
		stream, _, _ := strings.Cut(key, "/")
		if _, err := js.CreateOrUpdateConsumer(ctx, stream, cfg); err != nil {
			t.Fatalf("%s: the server refuses consumer %s: %v", n.cliFiles[key], key, err)
		}
	}
}

// consumerConfigs reads the configuration the server holds for each route's
// consumer.
func consumerConfigs(t *testing.T, js jetstream.JetStream, d deployment) map[string]jetstream.ConsumerConfig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]jetstream.ConsumerConfig{}
	for _, rc := range d.config.Routes {
		r := app.Route(rc, nil).WithDefaults()
		c, err := js.Consumer(ctx, r.Stream, r.Durable)
		if err != nil {
			t.Fatalf("consumer %s on %s: %v", r.Durable, r.Stream, err)
		}
		out[r.Stream+"/"+r.Durable] = c.CachedInfo().Config
	}
	return out
}

// waitOK polls url until it answers 200.
func waitOK(url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// process is a running agentrelay and what it has logged.
type process struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // signalled on every new line and at exit
	exited  chan struct{} // closed once the process has been waited for
	err     error         // from Wait, once exited
}

// startProcess starts bin with args and extra environment variables; the
// test's cleanup interrupts it if it is still running.
func startProcess(t *testing.T, bin string, args, env []string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), changed: make(chan struct{}, 1), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = p.cmd.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			p.signal()
		}
		p.err = p.cmd.Wait()
		close(p.exited)
		p.signal()
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.stop(t, os.Interrupt, 30*time.Second)
		}
	})
	return p
}

func (p *process) signal() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// logField waits for a JSON log line whose msg is msg and returns its field
// named field.
func (p *process) logField(t *testing.T, msg, field string, within time.Duration) string {
	t.Helper()
	timeout := time.After(within)
	seen := 0
	for {
		select {
		case <-timeout:
			t.Fatalf("no log line %q with %s after %v:\n%s", msg, field, within, p.output())
		default:
		}
		p.mu.Lock()
		lines := p.lines[seen:]
		seen = len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
				if v, ok := rec[field].(string); ok {
					return v
				}
			}
		}
		select {
		case <-p.changed:
		case <-timeout:
			t.Fatalf("no log line %q with %s after %v:\n%s", msg, field, within, p.output())
		}
		select {
		case <-p.exited:
			// The reader has stored every line before closing exited;
			// one more pass sees them all.
			if seen == p.lineCount() {
				t.Fatalf("%s exited (%v) before logging %q:\n%s", p.cmd.Path, p.err, msg, p.output())
			}
		default:
		}
	}
}

func (p *process) lineCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// stop sends sig and waits up to within for the process to exit; it
// returns the exit code (-1 if it had to be killed) and how long it took.
func (p *process) stop(t *testing.T, sig os.Signal, within time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signalling %s: %v", p.cmd.Path, err)
	}
	select {
	case <-p.exited:
	case <-time.After(within):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("%s did not exit within %v of %v:\n%s", p.cmd.Path, within, sig, p.output())
		return -1, time.Since(start)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}
