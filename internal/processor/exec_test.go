package processor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// syncLog is a job log that tests can read while a processor writes to it,
// and that signals when a marker line appears.
type syncLog struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
}

func newSyncLog(marker string) *syncLog {
	return &syncLog{marker: marker, seen: make(chan struct{})}
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	had := strings.Contains(l.buf.String(), l.marker)
	l.buf.Write(p)
	if !had && l.marker != "" && strings.Contains(l.buf.String(), l.marker) {
		close(l.seen)
	}
	return len(p), nil
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newExternal(t *testing.T, script string, c Config) Processor {
	t.Helper()
	c.Command = append([]string{script}, c.Command...)
	p, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExternalCopiesAndLogs(t *testing.T) {
	t.Parallel()
	script := writeScript(t, `echo "to stdout"
echo "to stderr" >&2
cp "$CONVEYOR_INPUT" "$CONVEYOR_OUTPUT_DIR/copy"
`)
	p := newExternal(t, script, Config{})
	if p.Name() != "proc.sh" {
		t.Errorf("Name() = %q, want proc.sh", p.Name())
	}
	env := newEnv(t, "in/file.txt", []byte("the input\n"))
	var log bytes.Buffer
	if err := p.Run(context.Background(), env, &log); err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	got, err := os.ReadFile(filepath.Join(env.OutputDir, "copy"))
	if err != nil || string(got) != "the input\n" {
		t.Fatalf("output copy = %q, %v", got, err)
	}
	if diff := cmp.Diff("to stdout\nto stderr\n", log.String()); diff != "" {
		t.Errorf("log mismatch (-want +got):\n%s", diff)
	}
}

// TestExternalStdoutClean runs a processor from a separate process (this test
// binary in helper mode) and checks that nothing reached that process's own
// stdout or stderr.
func TestExternalStdoutClean(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeExecutable(t, filepath.Join(dir, "proc.sh"), "#!/bin/sh\necho out-line\necho err-line >&2\n")
	for _, d := range []string{"out", "work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "input"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	log, _ := os.ReadFile(filepath.Join(dir, "job.log"))
	if err != nil {
		t.Fatalf("helper: %v\nlog:\n%s", err, log)
	}
	if stdout.Len() != 0 || stderr.Len() != 0 {
		t.Errorf("processor output leaked: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if string(log) != "out-line\nerr-line\n" {
		t.Errorf("job log = %q, want both lines", log)
	}
}

func TestExternalEnvironment(t *testing.T) {
	t.Parallel()
	script := writeScript(t, `printf '%s\0' "$CONVEYOR_INPUT" "$CONVEYOR_OUTPUT_DIR" "$CONVEYOR_WORK_DIR" \
	"$CONVEYOR_JOB_ID" "$CONVEYOR_INPUT_BUCKET" "$CONVEYOR_INPUT_KEY" "$TMPDIR" "$EXTRA" "$(pwd -P)" "$#" \
	> "$CONVEYOR_OUTPUT_DIR/vars"
env > "$CONVEYOR_OUTPUT_DIR/env"
`)
	p := newExternal(t, script, Config{Env: []string{"EXTRA=from config"}})
	env := newEnv(t, "photos/2024/cat.jpg", []byte("x"))
	if err := p.Run(context.Background(), env, nil); err != nil {
		t.Fatalf("Run: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(env.OutputDir, "vars"))
	if err != nil {
		t.Fatal(err)
	}
	workDir, err := filepath.EvalSymlinks(env.WorkDir)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	want := []string{env.Input, env.OutputDir, env.WorkDir, env.JobID, env.InputBucket, env.InputKey,
		env.WorkDir, "from config", workDir, "0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("variables mismatch (-want +got):\n%s", diff)
	}

	// Only the minimal environment reaches the processor, not Conveyor's own.
	envRaw, err := os.ReadFile(filepath.Join(env.OutputDir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	allowed := []string{"PATH", "HOME", "LANG", "TMPDIR", "EXTRA", "PWD", "OLDPWD", "SHLVL", "_"}
	allowed = append(allowed, contractVars...)
	for line := range strings.Lines(string(envRaw)) {
		key, _, _ := strings.Cut(line, "=")
		if !slices.Contains(allowed, key) {
			t.Errorf("unexpected variable in the processor's environment: %q", strings.TrimSpace(line))
		}
	}
}

func TestExternalKeyNeverExecuted(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "pwned-"+strconv.Itoa(os.Getpid()))
	key := "$(touch " + marker + ")`touch " + marker + "`; touch " + marker + " && echo 'quoted' \"dq\" \\\n$HOME *"
	script := writeScript(t, `printf '%s' "$CONVEYOR_INPUT_KEY" > "$CONVEYOR_OUTPUT_DIR/key"`+"\n")
	p := newExternal(t, script, Config{})
	env := newEnv(t, key, []byte("x"))
	if err := p.Run(context.Background(), env, nil); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(env.OutputDir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != key {
		t.Errorf("key arrived as %q, want exactly %q", got, key)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the key was executed: %s exists (stat: %v)", marker, err)
	}
}

func TestExternalExitErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
		want   *ExitError
		msg    string
	}{
		{"exit 1", "exit 1\n", &ExitError{Code: 1}, "processor exited with code 1"},
		{"exit 42", "echo failing >&2; exit 42\n", &ExitError{Code: 42, LastLine: "failing"}, "processor exited with code 42"},
		{"killed", "kill -KILL $$\n", &ExitError{Code: -1, Signal: "SIGKILL"}, "processor killed by signal SIGKILL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newExternal(t, writeScript(t, tt.script), Config{})
			err := p.Run(context.Background(), newEnv(t, "k", nil), nil)
			var ee *ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("Run = %v, want *ExitError", err)
			}
			if diff := cmp.Diff(tt.want, ee); diff != "" {
				t.Errorf("ExitError mismatch (-want +got):\n%s", diff)
			}
			if ee.Error() != tt.msg {
				t.Errorf("Error() = %q, want %q", ee.Error(), tt.msg)
			}
		})
	}
}

// TestExternalTimeout checks that a timeout kills the whole process group,
// grandchildren included, whether or not the processor ignores SIGTERM.
func TestExternalTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup string
	}{
		{"terminates on SIGTERM", ""},
		{"ignores SIGTERM", "trap '' TERM\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			script := writeScript(t, tt.setup+`sleep 30 &
echo $! > "$CONVEYOR_WORK_DIR/child.pid"
sleep 30
`)
			// Unsandboxed: the PID the script records is the host's.
			p := newExternal(t, script, Config{Timeout: 300 * time.Millisecond, Sandbox: SandboxOff})
			env := newEnv(t, "k", nil)
			start := time.Now()
			err := p.Run(context.Background(), env, nil)
			elapsed := time.Since(start)

			if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "300ms") {
				t.Fatalf("Run = %v, want ErrTimeout naming 300ms", err)
			}
			if bound := 300*time.Millisecond + killGrace + 5*time.Second; elapsed > bound {
				t.Errorf("Run took %s, want under %s", elapsed, bound)
			}
			raw, err := os.ReadFile(filepath.Join(env.WorkDir, "child.pid"))
			if err != nil {
				t.Fatalf("the script did not record its child: %v", err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
			if err != nil {
				t.Fatal(err)
			}
			assertGone(t, pid)
		})
	}
}

// TestExternalChildHoldsPipes: the processor exits 0 but leaves a child
// holding its stdout; Run must still return promptly and clean up.
func TestExternalChildHoldsPipes(t *testing.T) {
	t.Parallel()
	script := writeScript(t, `sleep 1000 &
echo $! > "$CONVEYOR_WORK_DIR/child.pid"
echo done
`)
	// Unsandboxed: in the sandbox, leftovers die with it (see
	// TestSandboxLeftoversDieWithIt).
	p := newExternal(t, script, Config{Sandbox: SandboxOff})
	env := newEnv(t, "k", nil)
	log := newSyncLog("")
	if err := p.Run(context.Background(), env, log); err != nil {
		t.Fatalf("Run = %v, want success", err)
	}
	if !strings.Contains(log.String(), "kept its output open") {
		t.Errorf("log does not explain the killed leftovers:\n%s", log.String())
	}
	raw, err := os.ReadFile(filepath.Join(env.WorkDir, "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	assertGone(t, pid)
}

func TestExternalCancel(t *testing.T) {
	t.Parallel()
	script := writeScript(t, "echo started\nsleep 30\n")
	p := newExternal(t, script, Config{Timeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := newSyncLog("started")
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx, newEnv(t, "k", nil), log) }()
	select {
	case <-log.seen:
	case err := <-errc:
		t.Fatalf("Run returned before cancel: %v", err)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Fatalf("Run = %v, want context.Canceled and not ErrTimeout", err)
		}
	case <-time.After(killGrace + 10*time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestExternalNotFoundAtRun(t *testing.T) {
	t.Parallel()
	script := writeScript(t, "exit 0\n")
	p := newExternal(t, script, Config{})
	if err := os.Remove(script); err != nil {
		t.Fatal(err)
	}
	err := p.Run(context.Background(), newEnv(t, "k", nil), nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), script) {
		t.Fatalf("Run = %v, want ErrNotFound naming %s", err, script)
	}
}

func TestExternalMissingInterpreter(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "proc")
	writeExecutable(t, path, "#!/nonexistent/interpreter\n")
	p := newExternal(t, path, Config{})
	err := p.Run(context.Background(), newEnv(t, "k", nil), nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "interpreter") {
		t.Fatalf("Run = %v, want ErrNotFound about the interpreter", err)
	}
}

func TestExternalRejectsRelativeEnv(t *testing.T) {
	t.Parallel()
	p := newExternal(t, writeScript(t, "exit 0\n"), Config{})
	env := newEnv(t, "k", nil)
	env.WorkDir = "work"
	if err := p.Run(context.Background(), env, nil); err == nil || !strings.Contains(err.Error(), `env.WorkDir "work" is not an absolute path`) {
		t.Fatalf("Run = %v, want a relative-path error", err)
	}
}
