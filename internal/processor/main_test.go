package processor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/volume"
)

// helperEnv makes the test binary act as a small program that runs one
// external processor and prints nothing itself (see TestExternalStdoutClean).
const helperEnv = "CONVEYOR_PROCESSOR_TEST_HELPER"

// orphanHelperEnv makes the test binary act as a worker that locks a job on
// the volume <dir>/vol and runs <dir>/proc.sh for it, until it is killed
// (see TestProcessorDiesWithItsWorkerAndLeftoversAreReaped).
const orphanHelperEnv = "CONVEYOR_PROCESSOR_TEST_ORPHAN"

// orphanSandboxEnv is the orphan helper's processor.sandbox setting.
const orphanSandboxEnv = "CONVEYOR_PROCESSOR_TEST_ORPHAN_SANDBOX"

// orphanLimitsEnv, when set, gives the orphan helper's processor limits,
// so that it runs under the limits shim.
const orphanLimitsEnv = "CONVEYOR_PROCESSOR_TEST_ORPHAN_LIMITS"

// probeEnv makes the test binary act as a processor that does one thing
// inside the sandbox and reports it (see probeMain).
const probeEnv = "CONVEYOR_PROCESSOR_TEST_PROBE"

func TestMain(m *testing.M) {
	HandleShim()
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	if os.Getenv(orphanHelperEnv) != "" {
		os.Exit(orphanHelperMain())
	}
	if os.Getenv(probeEnv) != "" {
		os.Exit(probeMain())
	}
	killGrace = time.Second
	pipeGrace = 200 * time.Millisecond
	// Orphaned grandchildren of test processors are re-parented to this
	// process, so tests can reap them and see them truly gone (ESRCH) even
	// where PID 1 does not reap zombies.
	becomeSubreaper()
	os.Exit(m.Run())
}

// helperMain runs the processor named by the helper environment with its log
// going to a file; anything on this process's stdout or stderr is a leak.
func helperMain() int {
	dir := os.Getenv(helperEnv)
	p, err := New(Config{Command: []string{filepath.Join(dir, "proc.sh")}})
	if err != nil {
		return 2
	}
	log, err := os.Create(filepath.Join(dir, "job.log"))
	if err != nil {
		return 2
	}
	defer log.Close()
	env := Env{
		JobID:     "0123456789abcdef0123456789abcdef",
		Input:     filepath.Join(dir, "input"),
		OutputDir: filepath.Join(dir, "out"),
		WorkDir:   filepath.Join(dir, "work"),
	}
	if err := p.Run(context.Background(), env, log); err != nil {
		fmt.Fprintln(log, "helper:", err)
		return 1
	}
	return 0
}

// orphanHelperMain locks the job as a worker does, hands the lock to the
// processor and records its process group, then writes <dir>/started and
// runs the processor.
func orphanHelperMain() int {
	dir := os.Getenv(orphanHelperEnv)
	const jobID = "0123456789abcdef0123456789abcdef"
	v, err := volume.Open(filepath.Join(dir, "vol"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	lock, err := v.LockJob(jobID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	defer lock.Unlock()
	c := Config{Command: []string{filepath.Join(dir, "proc.sh")}, Timeout: time.Hour, Sandbox: os.Getenv(orphanSandboxEnv)}
	if os.Getenv(orphanLimitsEnv) != "" {
		c.Limits = Limits{Memory: 1 << 30, OpenFiles: 256}
	}
	p, err := New(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	env := Env{
		JobID:     jobID,
		Input:     filepath.Join(dir, "input"),
		OutputDir: filepath.Join(dir, "out"),
		WorkDir:   filepath.Join(dir, "work"),
		Lock:      lock.File(),
		Started: func(pgid int) {
			if err := lock.SetProcessGroup(pgid); err != nil {
				fmt.Fprintln(os.Stderr, "helper:", err)
				return
			}
			// Renamed into place: the test polls for it and must never
			// read it half written.
			tmp := filepath.Join(dir, "started.tmp")
			if os.WriteFile(tmp, []byte(strconv.Itoa(pgid)), 0o644) == nil {
				_ = os.Rename(tmp, filepath.Join(dir, "started"))
			}
		},
	}
	if err := p.Run(context.Background(), env, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// writeScript writes an executable shell script into a fresh directory.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proc.sh")
	writeExecutable(t, path, "#!/bin/sh\n"+body)
	return path
}

// writeExecutable holds syscall.ForkLock while the file is open for writing:
// a fork in a parallel test would otherwise inherit the descriptor and make
// executing the file fail with ETXTBSY.
func writeExecutable(t *testing.T, path, content string) {
	t.Helper()
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// newEnv creates the directories of one attempt with the given input.
func newEnv(t *testing.T, key string, input []byte) Env {
	t.Helper()
	dir := t.TempDir()
	env := Env{
		JobID:       "0123456789abcdef0123456789abcdef",
		InputBucket: "input",
		InputKey:    key,
		Input:       filepath.Join(dir, "input"),
		OutputDir:   filepath.Join(dir, "out"),
		WorkDir:     filepath.Join(dir, "work"),
	}
	for _, d := range []string{env.OutputDir, env.WorkDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(env.Input, input, 0o644); err != nil {
		t.Fatal(err)
	}
	return env
}
