package cli

import (
	"context"
	"errors"
	"log/slog"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/appconfig"
)

// Worker is the relay: what `run` and `dev` run, and what every command
// checks a configuration file against. cmd/agentrelay gives Main the real
// one (internal/app.Worker); the command line parses flags and prints, and
// links none of the worker, so that its SRE tools do not depend on the
// relay's internals.
type Worker interface {
	// Run relays for cfg until ctx ends, then drains. started, when not
	// nil, is called once the worker runs, with the address of its
	// /metrics listener.
	Run(ctx context.Context, cfg *config.Config, log *slog.Logger, started func(metricsAddr string)) error
	// CheckConfig is the config.Rule of the components cfg configures:
	// every problem, at its field's path.
	CheckConfig(cfg *config.Config) []string
}

// ErrNoWorker: the command needs the worker, and Main was given none.
var ErrNoWorker = errors.New("this agentrelay was built without the worker")

// runWorker runs the worker (see Worker.Run).
func (e *env) runWorker(ctx context.Context, cfg *config.Config, log *slog.Logger, started func(metricsAddr string)) error {
	if e.worker == nil {
		return ErrNoWorker
	}
	return e.worker.Run(ctx, cfg, log, started)
}

// configRule is what a configuration file is checked against besides
// config.Validate: the worker's rules, or without a worker the rules of
// what the tools use (appconfig.Problems).
func (e *env) configRule() config.Rule {
	if e.worker == nil {
		return appconfig.Problems
	}
	return e.worker.CheckConfig
}
