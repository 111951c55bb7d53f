package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/natsembed"
)

// The dev set-up: one token, four agents, one stream, four routes.
const (
	devToken        = "dev-token"
	devSupportID    = "agtch_demo_support"
	devPausedID     = "agtch_demo_paused"
	devLockedID     = "agtch_demo_locked"
	devStream       = "DEMO"
	devPausedFor    = 12 * time.Second
	devMetricsAddr  = "127.0.0.1:9090"
	devEmulatorAddr = "127.0.0.1:8089"
)

type devFlags struct {
	dataDir  string
	natsPort int
	noDemo   bool
}

func newDevCmd(e *env, g *globalFlags) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process: NATS, the API emulator, the worker and a demo producer",
		Long: `Run a self-contained agentrelay: an embedded NATS server with JetStream (file
store under --data-dir), the trigger API emulator on loopback, the worker
relaying four demo routes, and a producer that publishes sample events: good
ones (acked), a poison message and one for an agent without permission (both
dead-lettered), and one for an agent that is not runnable for a while
(retried, then accepted). Runs until Ctrl-C, then drains.

No NATS install and no token are needed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), e, g, f)
		},
	}
	cmd.Flags().StringVar(&f.dataDir, "data-dir", ".agentrelay-dev", "folder for the embedded NATS store and the demo token")
	cmd.Flags().IntVar(&f.natsPort, "nats-port", 4222, "port of the embedded NATS server (0: any free port)")
	cmd.Flags().BoolVar(&f.noDemo, "no-demo", false, "do not publish the sample events")
	return cmd
}

func runDev(ctx context.Context, e *env, g *globalFlags, f *devFlags) error {
	if err := checkFlags(intIn("nats-port", f.natsPort, 1, maxPort, "any free port")); err != nil {
		return err
	}
	lc := g.logConfig()
	log, err := logger(e, lc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return err
	}

	// The server's own start-up banner is noise here; its warnings are not.
	serverLog, err := logger(e, config.Log{Level: "warn", Format: lc.Format})
	if err != nil {
		return err
	}
	ns, err := natsembed.Start(natsembed.Options{
		Port:     f.natsPort,
		StoreDir: filepath.Join(f.dataDir, "nats"),
		Logger:   serverLog.With("component", "nats-server"),
	})
	if err != nil {
		return fmt.Errorf("starting the embedded NATS server (is port %d taken? try --nats-port 0): %w", f.natsPort, err)
	}
	defer ns.Shutdown()

	emu := emulator.New(
		emulator.WithToken(devToken, devSupportID, devPausedID),
		emulator.WithTrigger(devSupportID, true),
		emulator.WithTrigger(devPausedID, false),
		emulator.WithTrigger(devLockedID, true),
		emulator.WithFaults(emulator.Faults{Latency: 20 * time.Millisecond, LatencyJitter: 30 * time.Millisecond}),
		emulator.WithLogger(log.With("component", "emulator")),
	)
	api, err := emu.Listen(freeAddr(devEmulatorAddr))
	if err != nil {
		return err
	}
	defer api.Close()

	tokenFile := filepath.Join(f.dataDir, "agent-token")
	if err := os.WriteFile(tokenFile, []byte(devToken+"\n"), 0o600); err != nil {
		return err
	}
	cfg := devConfig(ns.ClientURL(), api.URL, tokenFile, freeAddr(devMetricsAddr))
	cfg.Log = lc
	if err := cfg.Validate(); err != nil {
		return err
	}

	started := make(chan string, 1)
	runErr := make(chan error, 1)
	go func() {
		runErr <- app.Run(ctx, cfg, log, app.Options{Started: func(addr string) { started <- addr }})
	}()
	select {
	case err := <-runErr:
		return err
	case addr := <-started:
		printDevBanner(e, ns.ClientURL(), api.URL, addr)
	}
	if !f.noDemo {
		go func() {
			if err := publishDemo(ctx, ns.ClientURL(), log); err != nil && ctx.Err() == nil {
				log.Error("demo producer", "err", err)
			}
		}()
		go func() {
			select {
			case <-ctx.Done():
			case <-time.After(devPausedFor):
				emu.SetRunnable(devPausedID, true)
				log.Info("emulator: agent is runnable now; its retried event will be accepted", "trigger_id", devPausedID)
			}
		}()
	}
	return <-runErr
}

// devConfig is the configuration dev mode runs with.
func devConfig(natsURL, apiURL, tokenFile, metricsAddr string) *config.Config {
	tok := config.Token{File: tokenFile}
	route := func(name, subject, id string) config.Route {
		return config.Route{Name: name, Stream: devStream, Subjects: []string{subject}, TriggerID: id, Token: tok}
	}
	notes := route("notes", "demo.notes.>", devSupportID)
	notes.Body = "text"
	c := &config.Config{
		NATS:    config.NATS{URL: natsURL, Name: "agentrelay-dev"},
		API:     config.API{BaseURL: apiURL, Timeout: config.Duration(5 * time.Second)},
		Metrics: config.Metrics{Listen: metricsAddr},
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
		Routes: []config.Route{
			route("support", "demo.support.>", devSupportID),
			notes,
			route("paused", "demo.paused.>", devPausedID),
			route("locked", "demo.locked.>", devLockedID),
		},
	}
	c.ApplyDefaults()
	return c
}

// freeAddr returns addr if it can be listened on, else a free port on the
// same host: dev mode should start even when 9090 or 8089 is taken.
func freeAddr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, _ := net.SplitHostPort(addr)
		return net.JoinHostPort(host, "0")
	}
	_ = ln.Close()
	return addr
}

func printDevBanner(e *env, natsURL, apiURL, metricsAddr string) {
	printf(e.stderr, `
agentrelay dev is running.
  NATS (JetStream)  %s   stream %s, subjects demo.>
  API emulator      %s   token %q
  metrics / health  http://%s/metrics  /healthz  /readyz
  dead letters      stream AGENTRELAY_DLQ, subjects agentrelay.dlq.>

Publish more from a second terminal:
  go run ./cmd/agentrelay publish -s %s demo.support.new --input "Summarise ticket 7" --msg-id ticket-7
  go run ./cmd/agentrelay publish -s %s demo.notes.new --raw --input "a plain-text note" -k thread-1
  go run ./cmd/agentrelay publish -s %s demo.support.new --raw --input "not json"      # dead-lettered: invalid_json
Stop with Ctrl-C (the worker drains first).

`, natsURL, devStream, apiURL, devToken, metricsAddr, natsURL, natsURL, natsURL)
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
	samples := []struct {
		what, subject, body string
		header              nats.Header
	}{
		{"accepted", "demo.support.new", `{"input":"Summarise the customer escalation in ticket 1042 and recommend a response.","conversation_key":"ticket-1042"}`, nil},
		{"accepted", "demo.support.new", `{"input":"Draft a reply to ticket 1043."}`, nil},
		{"accepted (text body, conversation key from a header)", "demo.notes.new", "Customer called back about ticket 1042; they are happy now.", nats.Header{"Conversation-Key": {"ticket-1042"}}},
		{"dead-lettered: invalid_json (misspelt field)", "demo.support.new", `{"inptu":"typo"}`, nil},
		{"dead-lettered: forbidden (403, the token may not call this agent)", "demo.locked.new", `{"input":"Rotate the admin keys."}`, nil},
		{fmt.Sprintf("retried (409, not runnable for %s), then accepted", devPausedFor), "demo.paused.new", `{"input":"Run the nightly report."}`, nil},
	}
	for i, s := range samples {
		msg := &nats.Msg{Subject: s.subject, Data: []byte(s.body), Header: s.header}
		id := fmt.Sprintf("demo-%s-%d", run, i+1)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
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
