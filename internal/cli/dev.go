//go:build !release

// dev and emulator are left out of release builds (`make build`, the
// image): they link nats-server and the API emulator, which a worker never
// runs and which cost it ~16 MB of binary and a few MiB of memory
// (BENCHMARKS.md). See dev_release.go for what a release build has instead.

package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/natsembed"
)

// startHint ends the root command's help: where to start.
const startHint = `Start with "agentrelay dev" for a self-contained demo.`

// The dev set-up: one token, four agents, one stream, five routes (one of
// them ordered by conversation key).
const (
	devToken        = "dev-token"
	devSupportID    = "agtch_demo_support"
	devPausedID     = "agtch_demo_paused"
	devLockedID     = "agtch_demo_locked"
	devStream       = "DEMO"
	devPausedFor    = 12 * time.Second
	devHost         = "127.0.0.1"
	devMetricsPort  = 9090
	devEmulatorPort = 8089
	// devConfigFile is the configuration dev writes into its data dir and
	// runs with, for the SRE commands to use while it runs.
	devConfigFile = "agentrelay.yaml"
)

// devCommands are the commands that need the embedded NATS server or the
// emulator.
func devCommands(e *env, g *globalFlags) []*cobra.Command {
	return []*cobra.Command{newDevCmd(e, g), newEmulatorCmd(e, g)}
}

type devFlags struct {
	dataDir      string
	natsPort     int
	emulatorPort int
	metricsPort  int
	noDemo       bool
	// emulatorPortSet and metricsPortSet say the port was asked for: then
	// a port in use is an error, as for --nats-port; the defaults fall back
	// to any free port so that dev starts beside another service on 9090.
	emulatorPortSet, metricsPortSet bool
}

func newDevCmd(e *env, g *globalFlags) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process: NATS, the API emulator, the worker and a demo producer",
		Long: `Run a self-contained agentrelay: an embedded NATS server with JetStream (file
store under --data-dir), the trigger API emulator on loopback, the worker
relaying five demo routes (one ordered by conversation key), and a producer that publishes sample events: good
ones (acked), a poison message and one for an agent without permission (both
dead-lettered), and one for an agent that is not runnable for a while
(retried, then accepted). Runs until Ctrl-C, then drains.

No NATS install and no token are needed. dev writes the configuration it
runs with to agentrelay.yaml in --data-dir; the SRE commands (status, dlq,
pause, resume) take it with --config while dev runs. The banner prints the
commands.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.emulatorPortSet = cmd.Flags().Changed("emulator-port")
			f.metricsPortSet = cmd.Flags().Changed("metrics-port")
			return runDev(cmd.Context(), e, g, f)
		},
	}
	cmd.Flags().StringVar(&f.dataDir, "data-dir", ".agentrelay-dev", "folder for the embedded NATS store, the demo token and the configuration dev runs with")
	cmd.Flags().IntVar(&f.natsPort, "nats-port", 4222, "port of the embedded NATS server (0: any free port)")
	cmd.Flags().IntVar(&f.emulatorPort, "emulator-port", devEmulatorPort, "port of the API emulator on 127.0.0.1 (0: any free port; the default falls back to a free port when taken)")
	cmd.Flags().IntVar(&f.metricsPort, "metrics-port", devMetricsPort, "port of /metrics, /healthz and /readyz on 127.0.0.1 (0: any free port; the default falls back to a free port when taken)")
	cmd.Flags().BoolVar(&f.noDemo, "no-demo", false, "do not publish the sample events")
	return cmd
}

func runDev(ctx context.Context, e *env, g *globalFlags, f *devFlags) error {
	if err := checkFlags(
		intIn("nats-port", f.natsPort, 1, maxPort, "any free port"),
		intIn("emulator-port", f.emulatorPort, 1, maxPort, "any free port"),
		intIn("metrics-port", f.metricsPort, 1, maxPort, "any free port"),
	); err != nil {
		return err
	}
	lc := g.logConfig()
	log, err := logger(e, lc)
	if err != nil {
		return err
	}
	// Absolute, so that the configuration file works from any directory.
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	ns, err := startDevNATS(e, lc, f.natsPort, dataDir)
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	emu, api, err := startDevEmulator(log, f)
	if err != nil {
		return err
	}
	defer api.Close()
	cfgFile := filepath.Join(dataDir, devConfigFile)
	cfg, err := writeDevFiles(dataDir, cfgFile, ns.ClientURL(), api.URL, lc, f)
	if err != nil {
		return err
	}

	started := make(chan string, 1)
	runErr := make(chan error, 1)
	go func() {
		runErr <- e.runWorker(ctx, cfg, log, func(addr string) { started <- addr })
	}()
	select {
	case err := <-runErr:
		return err
	case addr := <-started:
		printDevBanner(e, devBanner{natsURL: ns.ClientURL(), apiURL: api.URL, metricsAddr: addr, configFile: cfgFile, executable: executable()})
	}
	if !f.noDemo {
		go runDemo(ctx, ns.ClientURL(), emu, log)
	}
	return <-runErr
}

// startDevNATS starts the embedded NATS server, its store under dataDir.
func startDevNATS(e *env, lc config.Log, port int, dataDir string) (*natsembed.Server, error) {
	// The server's own start-up banner is noise here; its warnings are not.
	serverLog, err := logger(e, config.Log{Level: "warn", Format: lc.Format})
	if err != nil {
		return nil, err
	}
	ns, err := natsembed.Start(natsembed.Options{
		Port:     port,
		StoreDir: filepath.Join(dataDir, "nats"),
		Logger:   serverLog.With("component", "nats-server"),
	})
	if err != nil {
		return nil, fmt.Errorf("starting the embedded NATS server (is port %d taken? try --nats-port 0): %w", port, err)
	}
	return ns, nil
}

// startDevEmulator starts the API emulator with the demo's agents.
func startDevEmulator(log *slog.Logger, f *devFlags) (*emulator.Emulator, *emulator.Server, error) {
	opts := append([]emulator.Option{
		emulator.WithToken(devToken, devSupportID, devPausedID),
		emulator.WithTrigger(devSupportID, true),
		emulator.WithTrigger(devPausedID, false),
		emulator.WithTrigger(devLockedID, true),
		emulator.WithFaults(emulator.Faults{Latency: 20 * time.Millisecond, LatencyJitter: 30 * time.Millisecond}),
		emulator.WithLogger(log.With("component", "emulator")),
	}, devMappingEmulator(devToken)...)
	emu := emulator.New(opts...)
	api, err := emu.Listen(devAddr(f.emulatorPort, f.emulatorPortSet))
	if err != nil {
		return nil, nil, fmt.Errorf("starting the API emulator (is port %d taken? try --emulator-port 0): %w", f.emulatorPort, err)
	}
	return emu, api, nil
}

// writeDevFiles writes the agents' token file and the configuration dev
// runs with, and returns that configuration as read back.
func writeDevFiles(dataDir, cfgFile, natsURL, apiURL string, lc config.Log, f *devFlags) (*config.Config, error) {
	tokenFile := filepath.Join(dataDir, "agent-token")
	if err := os.WriteFile(tokenFile, []byte(devToken+"\n"), 0o600); err != nil {
		return nil, err
	}
	spec := devConfig(natsURL, apiURL, tokenFile, devAddr(f.metricsPort, f.metricsPortSet))
	spec.Log.Level, spec.Log.Format = lc.Level, lc.Format
	// dev runs with what it wrote, so the file the SRE commands read is
	// the configuration in use, not a description of it.
	return writeDevConfig(cfgFile, spec)
}

// runDemo publishes the sample events, and makes the paused agent runnable
// after devPausedFor.
func runDemo(ctx context.Context, natsURL string, emu *emulator.Emulator, log *slog.Logger) {
	go func() {
		if err := publishDemo(ctx, natsURL, log); err != nil && ctx.Err() == nil {
			log.Error("demo producer", "err", err)
		}
	}()
	select {
	case <-ctx.Done():
	case <-time.After(devPausedFor):
		emu.SetRunnable(devPausedID, true)
		log.Info("emulator: agent is runnable now; its retried event will be accepted", "trigger_id", devPausedID)
	}
}

// devConfig is the configuration dev mode runs with, before defaults.
func devConfig(natsURL, apiURL, tokenFile, metricsAddr string) *config.Config {
	tok := config.Token{File: tokenFile}
	route := func(name, subject, id string) config.Route {
		return config.Route{Name: name, Stream: devStream, Subjects: []string{subject}, TriggerID: id, Token: tok}
	}
	notes := route("notes", "demo.notes.>", devSupportID)
	notes.Body = "text"
	thread := route("thread", "demo.thread.>", devSupportID)
	thread.Ordering = "conversation_key"
	c := &config.Config{
		NATS:    config.NATS{URL: natsURL, Name: "agentrelay-dev"},
		API:     config.API{BaseURL: apiURL, Timeout: config.Duration(5 * time.Second)},
		Metrics: config.Metrics{Listen: metricsAddr},
		// Every acceptance in the log, so the demo shows the outcomes and
		// the ordered conversation's order.
		Log: config.Log{Accepted: 1},
		Defaults: config.RouteDefault{
			AckWait: config.Duration(30 * time.Second),
			Retry: config.Retry{
				MaxAttempts:    8,
				InitialBackoff: config.Duration(2 * time.Second),
				MaxBackoff:     config.Duration(10 * time.Second),
			},
		},
		Streams: []config.Stream{{
			Name: devStream, Subjects: []string{"demo.>"},
			MaxAge: config.Duration(24 * time.Hour), DuplicateWindow: config.Duration(2 * time.Minute),
		}},
		Routes: append([]config.Route{
			route("support", "demo.support.>", devSupportID),
			notes,
			route("paused", "demo.paused.>", devPausedID),
			route("locked", "demo.locked.>", devLockedID),
			thread,
		}, devMappingRoutes(devStream, tokenFile)...),
	}
	return c
}

// writeDevConfig writes spec to path, with only the fields it sets, and
// reads it back the way dev runs it: defaults applied and validated.
// Environment overrides are left out on purpose: an AGENTRELAY_NATS_URL
// meant for a real deployment must not point dev's worker elsewhere.
func writeDevConfig(path string, spec *config.Config) (*config.Config, error) {
	var doc yaml.Node
	if err := doc.Encode(spec); err != nil {
		return nil, err
	}
	pruneZero(&doc)
	var body bytes.Buffer
	enc := yaml.NewEncoder(&body)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	head := "# Written by `agentrelay dev` at start-up: the configuration it runs with\n" +
		"# (rewritten at every start; ports may change). While dev runs, the SRE\n" +
		"# commands use it: agentrelay status --config " + shellQuote(path) + "\n"
	data := append([]byte(head), body.Bytes()...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}
	cfg, err := config.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// pruneZero drops the mapping entries whose value is empty, zero, false or
// null (an unset field, which the defaults fill in) and the mappings and
// lists left empty, so that the file shows what dev sets.
func pruneZero(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			pruneZero(c)
		}
		return false
	case yaml.MappingNode:
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !pruneZero(n.Content[i+1]) {
				kept = append(kept, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = kept
		return len(kept) == 0
	case yaml.SequenceNode:
		for _, c := range n.Content {
			pruneZero(c)
		}
		return len(n.Content) == 0
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return true
		case "!!bool":
			return n.Value == "false"
		case "!!int", "!!float":
			return n.Value == "0"
		case "!!str":
			return n.Value == "" || n.Value == "0s"
		}
	}
	return false
}

// devAddr is the loopback address for port. A port asked for is used as it
// is; the default falls back to any free port when it is taken, so that dev
// starts even beside something else on 9090 or 8089.
func devAddr(port int, asked bool) string {
	addr := net.JoinHostPort(devHost, strconv.Itoa(port))
	if asked || port == 0 {
		return addr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return net.JoinHostPort(devHost, "0")
	}
	_ = ln.Close()
	return addr
}

// goRunCommand is how the banner's commands call agentrelay when dev runs
// from `go run`: the module path works from anywhere in the repository.
const goRunCommand = "go run github.com/agentrelay/agentrelay/cmd/agentrelay"

// executable is how the banner's commands call agentrelay: the path of the
// running binary (bin/agentrelay-dev from make run: it starts at once,
// where `go run` compiles for seconds), unless it is a build of `go run`,
// whose path in the go command's cache changes with every build.
func executable() string {
	p, err := os.Executable()
	if err != nil {
		return "agentrelay"
	}
	if builtByGoRun(p) {
		return goRunCommand
	}
	return p
}

// builtByGoRun tells a binary `go run` built: in its temporary folder
// (/tmp/go-build123/b001/exe/agentrelay) or in the go command's cache
// (~/.cache/go-build/12/1234…-d/agentrelay). A test binary
// (/tmp/go-build123/b001/cli.test) is not one.
func builtByGoRun(path string) bool {
	parts := strings.Split(filepath.ToSlash(path), "/")
	for i, e := range parts {
		if e == "go-build" || strings.HasPrefix(e, "go-build") && slices.Contains(parts[i+1:len(parts)-1], "exe") {
			return true
		}
	}
	return false
}

// shellSafe tells words a POSIX shell takes as they are.
func shellSafe(s string) bool {
	return s != "" && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-") == ""
}

// shellQuote quotes s for a POSIX shell when it needs it, so that a
// banner command can be pasted as it is.
func shellQuote(s string) string {
	if shellSafe(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// devBanner is what the banner tells.
type devBanner struct {
	natsURL, apiURL, metricsAddr string
	configFile, executable       string
}

func printDevBanner(e *env, b devBanner) {
	bin, cfg := shellQuote(b.executable), shellQuote(b.configFile)
	if b.executable == goRunCommand {
		bin = goRunCommand // words the shell must split
	}
	printf(e.stderr, `
agentrelay dev is running.
  NATS (JetStream)  %s   stream %s, subjects demo.>
  API emulator      %s   token %q
  metrics / health  http://%s/metrics  /healthz  /readyz
  dead letters      stream AGENTRELAY_DLQ, subjects agentrelay.dlq.>
  configuration     %s

Publish more from a second terminal:
  %s publish -s %s demo.support.new --input "Summarise ticket 7" --msg-id ticket-7
  %s publish -s %s demo.notes.new --raw --input "a plain-text note" -k thread-1
  %s publish -s %s demo.support.new --raw --input "not json"      # dead-lettered: invalid_json

Look at it with the SRE commands and dev's configuration:
  %s status --config %s
  %s dlq list --config %s
  %s dlq replay --config %s --route support --dry-run
Stop with Ctrl-C (the worker drains first).
%s
`, b.natsURL, devStream, b.apiURL, devToken, b.metricsAddr, b.configFile,
		bin, b.natsURL, bin, b.natsURL, bin, b.natsURL,
		bin, cfg, bin, cfg, bin, cfg, goRunNote(b.executable))
}

// goRunNote says, when dev runs from `go run`, how to get a binary whose
// commands start at once.
func goRunNote(executable string) string {
	if executable != goRunCommand {
		return ""
	}
	return "(`go run` compiles for a few seconds at every command: `make run` builds bin/agentrelay-dev\nand runs dev from it, and the commands above then name it.)\n"
}

// publishDemo publishes the sample events.
func publishDemo(ctx context.Context, natsURL string, log *slog.Logger) error {
	nc, err := nats.Connect(natsURL, nats.Name("agentrelay-dev-producer"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	run := strconv.FormatInt(time.Now().Unix(), 36)
	samples := []devSample{
		{"accepted", "demo.support.new", `{"input":"Summarise the customer escalation in ticket 1042 and recommend a response.","conversation_key":"ticket-1042"}`, nil},
		{"accepted", "demo.support.new", `{"input":"Draft a reply to ticket 1043."}`, nil},
		{"accepted (text body, conversation key from a header)", "demo.notes.new", "Customer called back about ticket 1042; they are happy now.", nats.Header{"Conversation-Key": {"ticket-1042"}}},
		{"dead-lettered: invalid_json (misspelt field)", "demo.support.new", `{"inptu":"typo"}`, nil},
		{"dead-lettered: forbidden (403, the token may not call this agent)", "demo.locked.new", `{"input":"Rotate the admin keys."}`, nil},
		{fmt.Sprintf("retried (409, not runnable for %s), then accepted", devPausedFor), "demo.paused.new", `{"input":"Run the nightly report."}`, nil},
		{"accepted first of conversation thread-7 (ordered route)", "demo.thread.new", `{"input":"1/3: the customer reports a broken login.","conversation_key":"thread-7"}`, nil},
		{"accepted second of conversation thread-7, never before the first", "demo.thread.new", `{"input":"2/3: the customer adds a screenshot.","conversation_key":"thread-7"}`, nil},
		{"accepted third of conversation thread-7, never before the second", "demo.thread.new", `{"input":"3/3: the customer says it works again.","conversation_key":"thread-7"}`, nil},
	}
	samples = append(samples, devMappingSamples(run)...)
	for i, s := range samples {
		msg := &nats.Msg{Subject: s.subject, Data: []byte(s.body), Header: s.header}
		var opts []jetstream.PublishOpt
		id := ""
		if !strings.HasPrefix(s.subject, "demo.ce.") {
			// A CloudEvent's key is its source and id: no message id.
			id = fmt.Sprintf("demo-%s-%d", run, i+1)
			opts = append(opts, jetstream.WithMsgID(id))
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.PublishMsg(pctx, msg, opts...)
		cancel()
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		log.Info("demo producer published", "subject", s.subject, "stream_seq", ack.Sequence, "msg_id", id, "expect", s.what)
	}
	return nil
}
