package app

import (
	"context"
	"log/slog"

	"github.com/agentrelay/agentrelay/config"
)

// Worker is the relay as the command line runs it (cli.Worker): cmd/agentrelay
// gives it to cli.Main, so that the command line itself links none of the
// worker. Its zero value is ready.
type Worker struct{}

// Run is Run with Options.Started set to started.
func (Worker) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, started func(metricsAddr string)) error {
	return Run(ctx, cfg, log, Options{Started: started})
}

// CheckConfig is CheckConfig.
func (Worker) CheckConfig(cfg *config.Config) []string { return CheckConfig(cfg) }
