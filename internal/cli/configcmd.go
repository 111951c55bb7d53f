package cli

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
)

func newConfigCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	var skipTokens bool
	check := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a configuration file and list every problem",
		Long: `Validate a configuration file (with the environment overrides applied) and
list every problem with the path of its field. Like run, it reads every
route's agent token (file or environment variable), so that a configuration
it passes does not fail at start; --skip-tokens leaves that out (for CI,
where the secrets are not present). Exits 0 when valid, 2 when not.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return usageError{err}
			}
			defer f.Close()
			read := config.Check
			if skipTokens {
				read = config.Read
			}
			c, err := read(f, e.lookupEnv, app.CheckConfig)
			if err != nil {
				return err
			}
			tokens := "tokens readable"
			if skipTokens {
				tokens = "tokens not checked"
			}
			dl := app.DeadLetter(c.DeadLetter).WithDefaults()
			printf(e.stdout, "%s: ok (%d routes, %d managed streams, dead letters to %s on %s.>, %s)\n",
				args[0], len(c.Routes), len(c.Streams), dl.Stream, dl.SubjectPrefix, tokens)
			return nil
		},
	}
	check.Flags().BoolVar(&skipTokens, "skip-tokens", false, "do not read the routes' agent tokens")
	cmd.AddCommand(check)
	return cmd
}
