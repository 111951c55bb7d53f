package cli

import (
	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/internal/buildinfo"
)

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, revision and Go version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			bi := buildinfo.Get()
			printf(e.stdout, "agentrelay %s\nrevision %s\n%s\n", bi.Version, bi.Revision, bi.GoVersion)
			return nil
		},
	}
}
