// Package version says which build of Conveyor is running, for the CLI and
// the Lambda alike. It imports nothing heavy so the bootstrap stays small.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is stamped at build time:
// -ldflags "-X github.com/conveyorhq/conveyor/internal/version.Version=v1.2.3".
var Version = "dev"

// Commit is the VCS revision the binary was built from, when Go recorded it.
func Commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// String is the one-line description `conveyor version` prints.
func String() string {
	return fmt.Sprintf("%s (commit %s, %s, %s/%s)", Version, Commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
