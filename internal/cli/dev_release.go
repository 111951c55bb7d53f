//go:build release

package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// startHint ends the root command's help: where to start.
const startHint = `Run "agentrelay config check -c FILE", then "agentrelay run -c FILE"; for a
self-contained demo, run "make run" from a clone of the repository.`

// ErrNotInRelease is returned by dev and emulator in a release build.
var ErrNotInRelease = errors.New("not in release builds")

// devCommands, in a release build, are hidden stand-ins for dev and
// emulator that say where those are: the release binary links no NATS
// server and no API emulator (see dev.go).
func devCommands(_ *env, _ *globalFlags) []*cobra.Command {
	stub := func(name string) *cobra.Command {
		return &cobra.Command{
			Use:                name,
			Short:              "not in release builds: run `make run` from a clone of the repository",
			Hidden:             true,
			DisableFlagParsing: true,
			RunE: func(*cobra.Command, []string) error {
				return usageError{fmt.Errorf("agentrelay %s: %w (they link no NATS server and no API emulator); "+
					"from a clone of the repository run `make run`, which builds bin/agentrelay-dev with it", name, ErrNotInRelease)}
			},
		}
	}
	return []*cobra.Command{stub("dev"), stub("emulator")}
}
