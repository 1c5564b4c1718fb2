package volume

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const id = "0123456789abcdef0123456789abcdef"

func TestOpenKeepsItsIdentity(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	v1, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if v1.ID() == "" || v1.ID() != v2.ID() {
		t.Fatalf("volume ID changed across opens: %q then %q", v1.ID(), v2.ID())
	}
	other, _ := Open(t.TempDir())
	if other.ID() == v1.ID() {
		t.Fatal("two volumes share an ID")
	}
	if _, err := Open("relative/dir"); err == nil {
		t.Fatal("a relative volume path was accepted")
	}
}

func TestPathsComeFromJobIDsOnly(t *testing.T) {
	t.Parallel()
	v, _ := Open(t.TempDir())
	w, err := v.WorkDir(id)
	if err != nil || w != filepath.Join(v.Root(), "work", id) {
		t.Fatalf("WorkDir = %q, %v", w, err)
	}
	l, err := v.LogPath(id)
	if err != nil || l != filepath.Join(v.Root(), "logs", id+".log") {
		t.Fatalf("LogPath = %q, %v", l, err)
	}
	for _, bad := range []string{"../../etc", "/etc/passwd", "", id + "/..", "$(reboot)"} {
		if _, err := v.WorkDir(bad); err == nil {
			t.Errorf("WorkDir(%q) accepted", bad)
		}
		if _, err := v.LogPath(bad); err == nil {
			t.Errorf("LogPath(%q) accepted", bad)
		}
		if _, err := v.LockJob(bad); err == nil {
			t.Errorf("LockJob(%q) accepted", bad)
		}
	}
}

func TestJobLockIsExclusiveAndDiesWithItsProcess(t *testing.T) {
	t.Parallel()
	v, _ := Open(t.TempDir())
	l, err := v.LockJob(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.LockJob(id); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	l.Unlock()
	l2, err := v.LockJob(id)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()

	// A lock held by a process that is killed is released by the kernel.
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed")
	}
	lockFile := filepath.Join(v.Root(), "locks", id+".lock")
	cmd := exec.Command("flock", "-x", lockFile, "sh", "-c", "echo held; exec sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	out.Read(buf) // "held": the other process has the lock
	if _, err := v.LockJob(id); !errors.Is(err, ErrLocked) {
		t.Fatalf("lock held by another process: %v", err)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // flock and the sleep that inherited its lock
	cmd.Wait()
	// SIGKILL is delivered asynchronously: wait (bounded) for the exit.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l3, err := v.LockJob(id)
		if err == nil {
			l3.Unlock()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock after its holder was killed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCheckSpace(t *testing.T) {
	t.Parallel()
	v, _ := Open(t.TempDir())
	if err := v.CheckSpace(1); err != nil {
		t.Fatalf("1 byte: %v", err)
	}
	err := v.CheckSpace(1 << 60)
	if err == nil || !strings.Contains(err.Error(), "free space or grow the volume") {
		t.Fatalf("an exabyte: %v", err)
	}
	if _, err := os.Stat(filepath.Join(v.Root(), "volume-id")); err != nil {
		t.Fatal(err)
	}
}

func TestSlotsBoundConcurrentJobs(t *testing.T) {
	t.Parallel()
	v, _ := Open(t.TempDir())
	ctx := context.Background()
	a, err := v.AcquireSlot(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := v.AcquireSlot(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Both slots taken: a third waits, and gives up when its context ends.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := v.AcquireSlot(short, 2); err == nil {
		t.Fatal("a third slot was granted out of two")
	}
	got := make(chan error, 1)
	go func() {
		s, err := v.AcquireSlot(ctx, 2)
		if err == nil {
			s.Release()
		}
		got <- err
	}()
	a.Release()
	if err := <-got; err != nil {
		t.Fatalf("waiting for a released slot: %v", err)
	}
	b.Release()
}

// A child that another goroutine is starting holds a copy of every
// descriptor until it executes. Unlock must release the job's lock even
// while such a copy is open, or the next LockJob in this process finds the
// job "running in another process" (seen in CI). A lock handed to a
// processor (a process group recorded) is the processor's too: a copy it
// holds keeps the job locked.
func TestUnlockReleasesDespiteACopyOfTheDescriptor(t *testing.T) {
	t.Parallel()
	v, _ := Open(t.TempDir())
	l, err := v.LockJob(id)
	if err != nil {
		t.Fatal(err)
	}
	copyFD, err := syscall.Dup(int(l.File().Fd())) // what a fork in flight holds
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	l2, err := v.LockJob(id)
	if err != nil {
		t.Fatalf("lock after unlock, with a copy of the old descriptor open: %v", err)
	}
	syscall.Close(copyFD)

	// Handed to a processor: its copy keeps the lock after Unlock.
	if err := l2.SetProcessGroup(syscall.Getpgrp()); err != nil {
		t.Fatal(err)
	}
	procFD, err := syscall.Dup(int(l2.File().Fd()))
	if err != nil {
		t.Fatal(err)
	}
	l2.Unlock()
	if _, err := v.LockJob(id); !errors.Is(err, ErrLocked) {
		t.Fatalf("lock while the processor's copy is open: %v, want ErrLocked", err)
	}
	syscall.Close(procFD)
	l3, err := v.LockJob(id)
	if err != nil {
		t.Fatalf("lock after the processor's copy closed: %v", err)
	}
	l3.Unlock()
}
