package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/processor"
)

func TestProcessorSandboxAndLimitsSettings(t *testing.T) {
	path := writeFile(t, `
processor:
  command: [/bin/true]
  sandbox: required
  network: true
  limits: {memory: 512MiB, cpu_time: 10m, open_files: 1024, processes: 64}
`)
	c, err := loadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := c.processorConfig()
	want := processor.Limits{Memory: 512 << 20, CPUTime: 10 * time.Minute, OpenFiles: 1024, Processes: 64}
	if diff := cmp.Diff(want, got.Limits); diff != "" || got.Sandbox != "required" || !got.Network {
		t.Errorf("sandbox %q network %v limits (-want +got):\n%s", got.Sandbox, got.Network, diff)
	}
	// The configuration file and the data dir are hidden from the sandbox.
	dataDir, _ := filepath.Abs(c.DataDir)
	for _, h := range []string{path, dataDir} {
		if !slices.Contains(got.Hide, h) {
			t.Errorf("processor hide %v lacks %s", got.Hide, h)
		}
	}

	c, err = loadConfig(path, env(map[string]string{
		"CONVEYOR_PROCESSOR_SANDBOX":           "off",
		"CONVEYOR_PROCESSOR_NETWORK":           "false",
		"CONVEYOR_PROCESSOR_LIMITS_MEMORY":     "1GiB",
		"CONVEYOR_PROCESSOR_LIMITS_CPU_TIME":   "90s",
		"CONVEYOR_PROCESSOR_LIMITS_OPEN_FILES": "64",
		"CONVEYOR_PROCESSOR_LIMITS_PROCESSES":  "8",
	}))
	if err != nil {
		t.Fatal(err)
	}
	got = c.processorConfig()
	want = processor.Limits{Memory: 1 << 30, CPUTime: 90 * time.Second, OpenFiles: 64, Processes: 8}
	if diff := cmp.Diff(want, got.Limits); diff != "" || got.Sandbox != "off" || got.Network {
		t.Errorf("from the environment: sandbox %q network %v limits (-want +got):\n%s", got.Sandbox, got.Network, diff)
	}
}

func TestProcessorSettingErrors(t *testing.T) {
	for _, tt := range []struct {
		file string
		env  map[string]string
		want string
	}{
		{file: "processor: {limits: {memory: 512M}}\n", want: `processor.limits.memory: "512M" is not a size; use a value like 512MiB`},
		{env: map[string]string{"CONVEYOR_PROCESSOR_LIMITS_MEMORY": "lots"}, want: `CONVEYOR_PROCESSOR_LIMITS_MEMORY="lots" is not a size`},
		{env: map[string]string{"CONVEYOR_PROCESSOR_NETWORK": "maybe"}, want: "CONVEYOR_PROCESSOR_NETWORK"},
		{file: "processor: {limits: {cpu_time: long}}\n", want: "cannot use `long` as a duration"},
		{file: "processor: {sandbox: maybe}\n", want: `processor.sandbox "maybe" is not one of auto, required, off`},
		{file: "processor: {limits: {memory: 1MiB}}\n", want: "processor.limits.memory must be at least 16 MiB"},
		{file: "processor: {limits: {open_files: 2}}\n", want: "processor.limits.open_files must be at least 16"},
	} {
		path := ""
		if tt.file != "" {
			path = writeFile(t, tt.file)
		}
		c, err := loadConfig(path, env(tt.env))
		if err == nil {
			err = c.validateComponents()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("file %q env %v: err %v, want mention of %q", tt.file, tt.env, err, tt.want)
		}
		if code, _ := explain(err); err != nil && code != ExitUsage {
			t.Errorf("%v: exit code %d, want %d", err, code, ExitUsage)
		}
	}
}

// TestWorkerRefusesWithoutRequiredSandbox: with processor.sandbox:
// required and no bubblewrap on PATH, `conveyor worker run` refuses to
// start with one sentence saying what to install.
func TestWorkerRefusesWithoutRequiredSandbox(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // nothing there: no bwrap
	if _, err := processor.New(processor.Config{Command: []string{"/bin/true"}}); err != nil {
		t.Fatalf("setup: /bin/true must do as a processor: %v", err)
	}
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"worker", "run", "--job", "0123456789abcdef0123456789abcdef",
		"--data-dir", filepath.Join(t.TempDir(), "data")}, &stdout, &stderr, env(map[string]string{
		"CONVEYOR_PROCESSOR_COMMAND": "/bin/true",
		"CONVEYOR_PROCESSOR_SANDBOX": "required",
	}))
	const want = "conveyor: processor.sandbox is required but bubblewrap (bwrap) is not installed: " +
		"apt-get install bubblewrap / dnf install bubblewrap, or set processor.sandbox: auto\n"
	if code != ExitUsage || stderr.String() != want {
		t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), ExitUsage, want)
	}
}
