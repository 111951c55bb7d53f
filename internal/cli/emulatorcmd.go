//go:build !release

package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
)

type emulatorFlags struct {
	listen      string
	tokens      []string
	triggers    []string
	notRunnable []string
	faults      emulator.Faults
	retryAfter  string
}

func newEmulatorCmd(e *env, g *globalFlags) *cobra.Command {
	f := &emulatorFlags{}
	cmd := &cobra.Command{
		Use:   "emulator",
		Short: "Serve an emulator of the Workspace Agents trigger API",
		Long: `Serve an emulator of POST /v1/workspace_agents/{id}/trigger on loopback:
bearer tokens mapped to the trigger ids they may call (401, 403), unknown ids
(404), channels not runnable (409), malformed bodies (400), Idempotency-Key
replays (the original 202, nothing enqueued twice), and fault injection.
Accepted events are logged.

Without --token and --trigger it serves a demo set-up: token "dev-token" may
call any id, and agtch_demo_support is runnable.`,
		Example: `  agentrelay emulator --token secret=agtch_a,agtch_b --trigger agtch_a --not-runnable agtch_b
  agentrelay emulator --latency 50ms --error-rate 0.1 --rate-limit-rate 0.05 --retry-after 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEmulator(cmd.Context(), e, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8089", "address to serve on")
	fl.StringArrayVar(&f.tokens, "token", nil, "TOKEN=ID[,ID...] a token and the trigger ids it may call (* for any); repeatable")
	fl.StringArrayVar(&f.triggers, "trigger", nil, "a runnable trigger id; repeatable")
	fl.StringArrayVar(&f.notRunnable, "not-runnable", nil, "a trigger id that answers 409; repeatable")
	fl.DurationVar(&f.faults.Latency, "latency", 0, "added to every answer")
	fl.DurationVar(&f.faults.LatencyJitter, "latency-jitter", 0, "random extra latency, up to this")
	fl.Float64Var(&f.faults.ServerErrorRate, "error-rate", 0, "share of requests answered 503")
	fl.Float64Var(&f.faults.RateLimitRate, "rate-limit-rate", 0, "share of requests answered 429")
	fl.StringVar(&f.retryAfter, "retry-after", "", "Retry-After sent with 429 answers")
	fl.Float64Var(&f.faults.HangRate, "hang-rate", 0, "share of requests never answered")
	fl.Float64Var(&f.faults.DropRate, "drop-rate", 0, "share of requests accepted, then the connection dropped")
	fl.Int64Var(&f.faults.Seed, "seed", 0, "random seed for faults (0: random)")
	return cmd
}

func runEmulator(ctx context.Context, e *env, g *globalFlags, f *emulatorFlags) error {
	if err := checkFlags(
		durationIn("latency", f.faults.Latency, 0, maxEmulatorLatency, ""),
		durationIn("latency-jitter", f.faults.LatencyJitter, 0, maxEmulatorLatency, ""),
		share("error-rate", f.faults.ServerErrorRate),
		share("rate-limit-rate", f.faults.RateLimitRate),
		share("hang-rate", f.faults.HangRate),
		share("drop-rate", f.faults.DropRate),
	); err != nil {
		return err
	}
	f.faults.RetryAfter = f.retryAfter
	if err := f.faults.Validate(); err != nil {
		return usageError{err}
	}
	lc := g.logConfig()
	log, err := logger(e, lc)
	if err != nil {
		return err
	}
	opts := []emulator.Option{emulator.WithFaults(f.faults), emulator.WithLogger(log)}
	if len(f.tokens) == 0 && len(f.triggers) == 0 && len(f.notRunnable) == 0 {
		opts = append(opts, emulator.WithToken("dev-token", "*"), emulator.WithTrigger("agtch_demo_support", true))
	}
	for _, t := range f.tokens {
		tok, ids, ok := strings.Cut(t, "=")
		if !ok || tok == "" || ids == "" {
			return usageError{fmt.Errorf("--token %q: want TOKEN=ID[,ID...]", redactToken(t))}
		}
		opts = append(opts, emulator.WithToken(tok, strings.Split(ids, ",")...))
	}
	for _, id := range f.triggers {
		opts = append(opts, emulator.WithTrigger(id, true))
	}
	for _, id := range f.notRunnable {
		opts = append(opts, emulator.WithTrigger(id, false))
	}
	srv, err := emulator.New(opts...).Listen(f.listen)
	if err != nil {
		return err
	}
	log.Info("emulator serving", "base_url", srv.URL, "endpoint", srv.URL+"/v1/workspace_agents/{id}/trigger")
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return nil
}

// redactToken keeps a token flag's shape for an error message, not its value.
func redactToken(flag string) string {
	if _, ids, ok := strings.Cut(flag, "="); ok {
		return "REDACTED=" + ids
	}
	return "REDACTED"
}
