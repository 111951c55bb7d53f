package cli

import (
	"github.com/spf13/cobra"
)

func newConfigCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a configuration file and list every problem",
		Long: `Validate a configuration file (with the environment overrides applied) and
list every problem with the path of its field. Exits 0 when valid, 2 when not.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			g.configPath = args[0]
			c, err := g.loadConfig(e)
			if err != nil {
				return err
			}
			printf(e.stdout, "%s: ok (%d routes, %d managed streams, dead letters to %s on %s.>)\n",
				args[0], len(c.Routes), len(c.Streams), c.DeadLetter.Stream, c.DeadLetter.SubjectPrefix)
			return nil
		},
	})
	return cmd
}
