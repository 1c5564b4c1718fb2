package worker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/worker"
)

// withScript replaces the bundle's processor by an external one running
// body, as configured by default (in the sandbox where bubblewrap works).
func withScript(t *testing.T, b bundle, body string) *worker.Worker {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proc.sh")
	syscall.ForkLock.RLock() // no parallel fork may inherit it open (ETXTBSY)
	err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755)
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	return withProcessor(t, b, processor.Config{Command: []string{path}})
}

// withProcessor returns a worker for the bundle's buckets and volume that
// runs the processor c describes.
func withProcessor(t *testing.T, b bundle, c processor.Config) *worker.Worker {
	t.Helper()
	p, err := processor.New(c)
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{OutputBucket: b.output, Backoff: 1, MaxBackoff: 1}, b.srv.Client, b.store, b.vol, p)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestExitDataErrIsDeadAtOnce: a processor exiting 65 (EX_DATAERR) ends its
// job dead after one attempt, with its last line of output as the cause;
// any other non-zero exit is retried.
func TestExitDataErrIsDeadAtOnce(t *testing.T) {
	t.Parallel()
	_, b := setup(t, worker.Config{})
	w := withScript(t, b, `echo "reading $CONVEYOR_INPUT"
echo "not a PNG file: bad signature" >&2
exit 65
`)
	rec := newJob(t, b, "broken.png", []byte("GIF89a"), 5)
	err := w.Run(context.Background(), rec.ID)
	if !errors.Is(err, worker.ErrDead) {
		t.Fatalf("Run = %v, want ErrDead after one attempt", err)
	}
	got := state(t, b, rec.ID)
	if got.State != job.Dead || got.Attempt != 1 || got.ExitCode == nil || *got.ExitCode != 65 {
		t.Fatalf("record: state %s, attempt %d, exit %v", got.State, got.Attempt, got.ExitCode)
	}
	const want = "processor proc.sh: processor rejected the input (exit 65): not a PNG file: bad signature"
	if got.Error != want {
		t.Errorf("cause %q, want %q", got.Error, want)
	}

	// The same processor failing otherwise is retried.
	_, b2 := setup(t, worker.Config{})
	w = withScript(t, b2, "echo 'temporary trouble' >&2\nexit 1\n")
	rec = newJob(t, b2, "fine.png", []byte("PNG"), 5)
	var re *worker.RetryError
	if err := w.Run(context.Background(), rec.ID); !errors.As(err, &re) {
		t.Fatalf("Run with exit 1 = %v, want a *RetryError", err)
	}
	if got := state(t, b2, rec.ID); got.State != job.Retrying || !strings.Contains(got.Error, "exited with code 1") {
		t.Errorf("record after exit 1: state %s, cause %q", got.State, got.Error)
	}
}

// TestMemoryLimitIsTheAttemptsCause: a processor allocating past
// processor.limits.memory fails its attempt, and the attempt's cause says
// the memory limit was exceeded.
func TestMemoryLimitIsTheAttemptsCause(t *testing.T) {
	t.Parallel()
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("setup: this test allocates with %s: %v (install python3)", python, err)
	}
	_, b := setup(t, worker.Config{})
	w := withProcessor(t, b, processor.Config{
		Command: []string{python, "-c", "b = bytearray(256 << 20)"},
		Limits:  processor.Limits{Memory: 64 << 20},
	})
	rec := newJob(t, b, "big.bin", []byte("x"), 3)
	var re *worker.RetryError
	if err := w.Run(context.Background(), rec.ID); !errors.As(err, &re) {
		t.Fatalf("Run = %v, want a *RetryError", err)
	}
	got := state(t, b, rec.ID)
	if len(got.Attempts) != 1 || !strings.Contains(got.Attempts[0].Error, "processor exceeded its memory limit (64 MiB)") {
		t.Fatalf("attempts %+v, want one whose cause says the memory limit (64 MiB) was exceeded", got.Attempts)
	}
}
