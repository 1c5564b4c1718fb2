package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/conveyorhq/conveyor/internal/processor"
)

// The worker builds one processor from configuration and runs it once per
// attempt, with the attempt's directories and the job log.
func Example() {
	dir, _ := os.MkdirTemp("", "conveyor-example-")
	defer os.RemoveAll(dir)
	env := processor.Env{
		JobID:       "0123456789abcdef0123456789abcdef",
		InputBucket: "input",
		InputKey:    "notes/hello.txt",
		Input:       filepath.Join(dir, "input"),
		OutputDir:   filepath.Join(dir, "out"),
		WorkDir:     filepath.Join(dir, "work"),
	}
	os.Mkdir(env.OutputDir, 0o755)
	os.Mkdir(env.WorkDir, 0o755)
	os.WriteFile(env.Input, []byte("hello conveyor\nsecond line\n"), 0o644)

	p, err := processor.New(processor.Config{}) // the "report" built-in
	if err != nil {
		fmt.Println(err)
		return
	}
	log, _ := os.Create(filepath.Join(dir, "job.log"))
	defer log.Close()
	if err := p.Run(context.Background(), env, log); err != nil {
		fmt.Println(err)
		return
	}

	raw, _ := os.ReadFile(filepath.Join(env.OutputDir, "report.json"))
	var r struct {
		Key         string `json:"key"`
		ContentType string `json:"content_type"`
		Lines       int    `json:"lines"`
		Words       int    `json:"words"`
	}
	json.Unmarshal(raw, &r)
	fmt.Println(p.Name(), r.Key, r.ContentType, r.Lines, r.Words)
	// Output: report notes/hello.txt text/plain; charset=utf-8 2 4
}

// Validate names the configuration field at fault and what to do.
func ExampleConfig_Validate() {
	err := processor.Config{Name: "resize"}.WithDefaults().Validate()
	fmt.Println(err)
	// Output: processor.name "resize" is not a built-in; choose one of report, zstd, noop or set processor.command
}
