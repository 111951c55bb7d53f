package cli

import (
	"github.com/spf13/cobra"
)

func newRunCmd(e *env, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the worker",
		Long: `Run the worker with the configuration file until SIGTERM or SIGINT, then
drain: stop pulling, let in-flight calls finish within worker.drain_grace,
hand the rest back to JetStream for another replica, and exit 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// As config check reads it: the same problems, tokens included.
			cfg, err := g.readConfig(e, g.path(e), true)
			if err != nil {
				return err
			}
			log, err := logger(e, cfg.Log)
			if err != nil {
				return err
			}
			return e.runWorker(cmd.Context(), cfg, log, nil)
		},
	}
}
