package cli

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/version"
)

// versionInfo is what `conveyor version -o json` prints; scripts and the
// container image test read it, so its field names are kept.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date,omitempty"` // VCS commit time, when Go recorded it
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

func newVersionCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Long: `Print the version, the commit it was built from, the Go version and the
platform. -o json prints them as one JSON object (version, commit,
build_date when known, go_version, os, arch) for scripts.`,
		Example: `  conveyor version
  conveyor version -o json | jq -r .version`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			switch output {
			case "text":
				fmt.Fprintln(g.Out, "conveyor "+version.String())
				return nil
			case "json":
				enc := json.NewEncoder(g.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(versionInfo{
					Version:   version.Version,
					Commit:    version.Commit(),
					BuildDate: buildDate(),
					GoVersion: runtime.Version(),
					OS:        runtime.GOOS,
					Arch:      runtime.GOARCH,
				})
			}
			return usageErrorf("-o %q is not a format; use text or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// buildDate is the time of the commit the binary was built from, when Go
// recorded it (a build with VCS stamping); "" otherwise.
func buildDate() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				return s.Value
			}
		}
	}
	return ""
}
