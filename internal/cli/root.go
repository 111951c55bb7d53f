// Package cli is agentrelay's command line: the worker (run), the embedded
// demo (dev), the API emulator, a producer helper (publish), configuration
// checking, the SRE tools (status, dlq, events, pause, resume) and version.
// It parses flags and prints; cmd/agentrelay calls Main with the worker
// (see Worker).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitError  = 1
	ExitConfig = 2 // bad flags or configuration: fix and retry
)

// env is what commands need from the process; tests give their own.
type env struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	getenv         func(string) string
	lookupEnv      func(string) (string, bool)
	// worker is the relay (nil: run, dev and config check fail with
	// ErrNoWorker, and files are checked without the relay's rules).
	worker Worker
}

// globalFlags are shared by every subcommand.
type globalFlags struct {
	configPath string
	logLevel   string
	logFormat  string
	// connectTimeout bounds how long a one-shot command (status, dlq,
	// events, pause, resume, publish) tries to reach NATS.
	connectTimeout time.Duration
}

// defaultConnectTimeout is --connect-timeout's default: an SRE at a
// terminal learns in 2 s that NATS is unreachable.
const defaultConnectTimeout = 2 * time.Second

// Bounds of --connect-timeout.
const minConnectTimeout, maxConnectTimeout = 100 * time.Millisecond, 5 * time.Minute

// Main runs the command line with args, w being the worker, and returns
// the exit code.
func Main(ctx context.Context, w Worker, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, stdin: stdin, getenv: os.Getenv, lookupEnv: os.LookupEnv, worker: w}
	root := newRoot(ctx, e)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ce *config.Error
	var ue usageError
	switch {
	case errors.As(err, &ce):
		printError(stderr, "", err)
		return ExitConfig
	case errors.As(err, &ue):
		printError(stderr, "error: ", err)
		return ExitConfig
	default:
		printError(stderr, "error: ", err)
		return ExitError
	}
}

// usageError marks a bad invocation.
type usageError struct{ error }

func newRoot(ctx context.Context, e *env) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "agentrelay",
		Short: "Relay NATS JetStream messages to Workspace Agents triggers",
		Long: `agentrelay takes messages off NATS JetStream durable consumers and calls the
Workspace Agents trigger API for each, with the message id as Idempotency-Key:
ack when accepted, retry with backoff on transient failures, dead-letter with a
reason when the message or the API says it can never succeed.

` + startHint,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVarP(&g.configPath, "config", "c", "", "configuration file (default $AGENTRELAY_CONFIG, else agentrelay.yaml)")
	pf.StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (overrides the file)")
	pf.StringVar(&g.logFormat, "log-format", "", "log format: auto, text, json (overrides the file)")
	pf.DurationVar(&g.connectTimeout, "connect-timeout", defaultConnectTimeout,
		fmt.Sprintf("how long a one-shot command tries to reach NATS before it gives up, from %v to %v", minConnectTimeout, maxConnectTimeout))
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		return checkFlags(durationIn("connect-timeout", g.connectTimeout, minConnectTimeout, maxConnectTimeout, ""))
	}

	root.AddCommand(
		newRunCmd(e, g),
		newPublishCmd(e, g),
		newMapCmd(e, g),
		newConfigCmd(e, g),
		newStatusCmd(e, g),
		newDLQCmd(e, g),
		newEventsCmd(e, g),
		newPauseCmd(e, g),
		newResumeCmd(e, g),
		newVersionCmd(e),
	)
	// dev and emulator link nats-server and the emulator: release builds
	// (-tags release) have stubs that point at `make run` instead.
	root.AddCommand(devCommands(e, g)...)
	_ = ctx
	return root
}

// path returns the configuration file path from the flag or environment.
func (g *globalFlags) path(e *env) string {
	if g.configPath != "" {
		return g.configPath
	}
	if p := e.getenv("AGENTRELAY_CONFIG"); p != "" {
		return p
	}
	return "agentrelay.yaml"
}

// loadConfig loads the configuration file for the commands that do not
// call the agent (their agent tokens are not read) and applies the log
// flags.
func (g *globalFlags) loadConfig(e *env) (*config.Config, error) {
	return g.readConfig(e, g.path(e), false)
}

func (g *globalFlags) applyLogFlags(c *config.Config) {
	if g.logLevel != "" {
		c.Log.Level = g.logLevel
	}
	if g.logFormat != "" {
		c.Log.Format = g.logFormat
	}
}

// logConfig is the log section for commands that run without a
// configuration file (dev, emulator): info, auto, or the flags.
func (g *globalFlags) logConfig() config.Log {
	c := &config.Config{Log: config.Log{Level: "info", Format: "auto"}}
	g.applyLogFlags(c)
	return c.Log
}

// logger builds the logger for a configuration's log section.
func logger(e *env, l config.Log) (*slog.Logger, error) {
	level, err := telemetry.ParseLevel(l.Level)
	if err != nil {
		return nil, usageError{err}
	}
	log, err := telemetry.NewLogger(e.stderr, level, l.Format)
	if err != nil {
		return nil, usageError{err}
	}
	return log, nil
}
