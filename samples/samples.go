// Package samples holds the files `conveyor up --demo` uploads, embedded in
// the binary so the demo works from any directory.
package samples

import "embed"

// FS holds the sample files, at its root.
//
//go:embed *.txt *.csv *.json *.md
var FS embed.FS
