// Command conveyor runs Conveyor: see 'conveyor --help'.
package main

import (
	"os"

	"github.com/conveyorhq/conveyor/internal/cli"
)

func main() { os.Exit(cli.Main()) }
