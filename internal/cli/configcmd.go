package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/appconfig"
)

func newConfigCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	var skipTokens bool
	check := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Validate a configuration file and list every problem",
		Long: `Validate a configuration file (with the environment overrides applied) and
list every problem with the path of its field, as run does before it starts:
the file is read by the same code. Like run, it reads every route's agent
token (file or environment variable), so that a configuration it passes does
not fail at start; --skip-tokens leaves that out (for CI, where the secrets
are not present). FILE defaults to --config, then $AGENTRELAY_CONFIG, then
agentrelay.yaml. Exits 0 when valid, 2 when not.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if e.worker == nil {
				return ErrNoWorker
			}
			path := g.path(e)
			if len(args) == 1 {
				if g.configPath != "" && g.configPath != args[0] {
					return usageError{fmt.Errorf("two files to check, %s (--config) and %s: give one", g.configPath, args[0])}
				}
				path = args[0]
			}
			c, err := g.readConfig(e, path, !skipTokens)
			if err != nil {
				return err
			}
			tokens := "tokens readable"
			if skipTokens {
				tokens = "tokens not checked"
			}
			dl := appconfig.DeadLetter(c.DeadLetter).WithDefaults()
			printf(e.stdout, "%s: ok (%d routes, %d managed streams, dead letters to %s on %s.>, %s)\n",
				path, len(c.Routes), len(c.Streams), dl.Stream, dl.SubjectPrefix, tokens)
			return nil
		},
	}
	check.Flags().BoolVar(&skipTokens, "skip-tokens", false, "do not read the routes' agent tokens")
	cmd.AddCommand(check)
	return cmd
}

// readConfig reads the configuration file at path and lists every problem
// in it at once (a *config.Error): what does not decode, what does not
// validate, what the components refuse (Worker.CheckConfig) and, with
// tokens, every route's agent token that cannot be read. It then applies
// the log flags. run and config check read the file through it, so that
// they refuse the same files with the same problems; the commands that do
// not call the agent leave the tokens out.
func (g *globalFlags) readConfig(e *env, path string, tokens bool) (*config.Config, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && g.configPath == "" && e.getenv("AGENTRELAY_CONFIG") == "" && path == g.path(e) {
			return nil, usageError{fmt.Errorf("no configuration: %s not found (pass --config FILE, or try `agentrelay dev`)", path)}
		}
		return nil, usageError{err}
	}
	defer f.Close()
	read := config.Read
	if tokens {
		read = config.Check
	}
	c, err := read(f, e.lookupEnv, e.configRule())
	if err != nil {
		return nil, err
	}
	g.applyLogFlags(c)
	return c, nil
}
