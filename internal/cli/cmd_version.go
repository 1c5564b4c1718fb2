package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/version"
)

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(g.Out, "conveyor "+version.String())
			return nil
		},
	}
}
