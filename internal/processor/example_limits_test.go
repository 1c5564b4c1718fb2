package processor_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/conveyorhq/conveyor/internal/processor"
)

// An external processor says that its input can never succeed by exiting
// with ExitDataErr; its last line of output becomes the job's cause. It runs
// in the sandbox where bubblewrap works (Sandbox "" is "auto"), under its
// limits (which need processor.HandleShim in main).
func ExampleExitError() {
	dir, _ := os.MkdirTemp("", "conveyor-example-")
	defer os.RemoveAll(dir)
	env := processor.Env{
		JobID:     "0123456789abcdef0123456789abcdef",
		Input:     filepath.Join(dir, "input.csv"),
		OutputDir: filepath.Join(dir, "out"),
		WorkDir:   filepath.Join(dir, "work"),
	}
	os.Mkdir(env.OutputDir, 0o755)
	os.Mkdir(env.WorkDir, 0o755)
	os.WriteFile(env.Input, []byte("GIF89a"), 0o644)

	p, err := processor.New(processor.Config{
		Command: []string{"/bin/sh", "-c", `echo "checking $CONVEYOR_INPUT"; echo "not a CSV file" >&2; exit 65`},
		Limits:  processor.Limits{Memory: 256 << 20, CPUTime: time.Minute},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = p.Run(context.Background(), env, nil)
	var ee *processor.ExitError
	if errors.As(err, &ee) && ee.Code == processor.ExitDataErr {
		fmt.Println(ee.LastLine)
		fmt.Println(err)
	}
	// Output:
	// not a CSV file
	// processor rejected the input (exit 65): not a CSV file
}

// Limits read sizes the way the configuration file writes them.
func ExampleParseSize() {
	n, _ := processor.ParseSize("512MiB")
	fmt.Println(n, processor.FormatSize(n))
	_, err := processor.ParseSize("512M")
	fmt.Println(err)
	// Output:
	// 536870912 512 MiB
	// "512M" is not a size; use a value like 512MiB, 2GiB or a byte count
}
