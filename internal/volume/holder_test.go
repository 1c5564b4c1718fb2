package volume

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startGroup starts `sleep` as the leader of a process group of its own,
// holding f (when not nil) as an inherited descriptor, as a processor
// holds its job's lock. The process is killed and reaped when the test ends.
func startGroup(t *testing.T, f *os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if f != nil {
		cmd.ExtraFiles = []*os.File{f}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return cmd
}

// deadPID returns the PID of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.Pid()
}

// TestLockJobReapsOnlyWhatADeadHolderLeft: the job's lock is held by a
// processor group whose worker (the recorded holder) is gone. LockJob
// kills that group and takes the lock; it kills nothing and returns
// ErrLocked while the holder lives, and never kills a group that does not
// hold the lock (a process group ID reused since).
func TestLockJobReapsOnlyWhatADeadHolderLeft(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("telling a dead holder from a live one needs /proc")
	}
	t.Parallel()
	me := self()
	tests := []struct {
		name       string
		holder     func(pgid int) holder
		otherGroup bool // record a group that does not hold the lock
		wantLock   bool
		wantKilled bool
	}{
		{"holder alive", func(pgid int) holder { return holder{me.PID, me.Start, pgid} }, false, false, false},
		{"holder dead", func(pgid int) holder { return holder{deadPID(t), 1, pgid} }, false, true, true},
		{"holder's PID reused", func(pgid int) holder { return holder{me.PID, me.Start + 1, pgid} }, false, true, true},
		{"holder dead, group ID reused", func(pgid int) holder { return holder{deadPID(t), 1, pgid} }, true, false, false},
		{"holder dead, own group recorded", func(int) holder { return holder{deadPID(t), 1, syscall.Getpgrp()} }, false, false, false},
		{"holder dead, group 1 recorded", func(int) holder { return holder{deadPID(t), 1, 1} }, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, _ := Open(t.TempDir())
			l, err := v.LockJob(id)
			if err != nil {
				t.Fatal(err)
			}
			proc := startGroup(t, l.File())
			pgid := proc.Process.Pid
			if tt.otherGroup {
				pgid = startGroup(t, nil).Process.Pid
			}
			// This process lets go of its descriptor without Unlock, as a
			// killed worker does: the processor alone holds the lock now.
			l.f.Close()
			if err := writeHolder(filepath.Join(v.Root(), "locks", id+".holder"), tt.holder(pgid)); err != nil {
				t.Fatal(err)
			}

			got, err := v.LockJob(id)
			if tt.wantLock {
				if err != nil {
					t.Fatalf("LockJob = %v, want the lock", err)
				}
				got.Unlock()
			} else if !errors.Is(err, ErrLocked) {
				t.Fatalf("LockJob = %v, want ErrLocked", err)
			}
			killed := syscall.Kill(proc.Process.Pid, 0) != nil || isZombie(proc.Process.Pid)
			if killed != tt.wantKilled {
				t.Fatalf("processor killed = %t, want %t", killed, tt.wantKilled)
			}
		})
	}
}

func isZombie(pid int) bool {
	_, state, err := procStat(pid)
	return err != nil || state == 'Z'
}

func TestLockJobRecordsItsHolder(t *testing.T) {
	t.Parallel()
	v, _ := Open(t.TempDir())
	path := filepath.Join(v.Root(), "locks", id+".holder")
	l, err := v.LockJob(id)
	if err != nil {
		t.Fatal(err)
	}
	h, err := readHolder(path)
	if err != nil || h.PID != os.Getpid() || h.PGID != 0 {
		t.Fatalf("holder = %+v, %v; want this process, no group yet", h, err)
	}
	if runtime.GOOS == "linux" && h.Start == 0 {
		t.Error("holder has no start time")
	}
	if err := l.SetProcessGroup(4242); err != nil {
		t.Fatal(err)
	}
	if h, err := readHolder(path); err != nil || h.PGID != 4242 {
		t.Fatalf("holder after SetProcessGroup = %+v, %v", h, err)
	}
	l.Unlock()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("holder file after Unlock: %v", err)
	}
}

func TestReidentify(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	v, _ := Open(root)
	l, _ := v.LockJob(id)
	defer l.Unlock()
	newID, err := Reidentify(root)
	if err != nil {
		t.Fatal(err)
	}
	if newID == v.ID() || !strings.HasPrefix(newID, "vol-") {
		t.Fatalf("Reidentify = %q, was %q", newID, v.ID())
	}
	if v2, _ := Open(root); v2.ID() != newID {
		t.Fatalf("Open after Reidentify: ID %q, want %q", v2.ID(), newID)
	}
	if m, _ := filepath.Glob(filepath.Join(root, "locks", "*.holder")); len(m) != 0 {
		t.Fatalf("holder files left: %v", m)
	}
	if _, err := Reidentify("relative"); err == nil {
		t.Fatal("a relative path was accepted")
	}
}

func TestOwnerNamesOneOpen(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	v1, _ := Open(root)
	v2, _ := Open(root)
	if v1.Owner() == v2.Owner() {
		t.Fatalf("two opens share owner %q", v1.Owner())
	}
	for _, v := range []*Volume{v1, v2} {
		if idPart, nonce, ok := strings.Cut(v.Owner(), "/"); !ok || idPart != v.ID() || nonce == "" {
			t.Fatalf("Owner() = %q, want %s/<nonce>", v.Owner(), v.ID())
		}
	}
}

// Cases whose lock stays taken wait reapWait: shortened for every test of
// the package before any runs.
func init() { reapWait = 2 * time.Second }
