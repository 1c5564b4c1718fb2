package processor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/volume"
)

// TestProcessorDiesWithItsWorkerAndLeftoversAreReaped: a worker (this test
// binary in helper mode) is killed with SIGKILL while its processor runs.
// The processor's leader must die with it (parent-death signal); the
// grandchild it started in the background keeps the job's lock, so the job
// stays locked (no second processor beside it) until the next LockJob sees
// the recorded holder dead, kills the recorded process group and takes the
// lock. While the worker lives, LockJob must refuse and kill nothing.
func TestProcessorDiesWithItsWorkerAndLeftoversAreReaped(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeExecutable(t, filepath.Join(dir, "proc.sh"), `#!/bin/sh
sleep 1000 &
echo $! > "$CONVEYOR_WORK_DIR/child.tmp" && mv "$CONVEYOR_WORK_DIR/child.tmp" "$CONVEYOR_WORK_DIR/child.pid"
echo $$ > "$CONVEYOR_WORK_DIR/leader.tmp" && mv "$CONVEYOR_WORK_DIR/leader.tmp" "$CONVEYOR_WORK_DIR/leader.pid"
sleep 1000
`)
	for _, d := range []string{"out", "work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "input"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	// The worker's output goes to a file, not a pipe: the processor's
	// leftovers inherit it, and a pipe would keep Wait waiting for them.
	outPath := filepath.Join(dir, "worker.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	worker := exec.Command(os.Args[0], "-test.run=^$")
	// Unsandboxed: the PIDs the script records are the host's (see
	// TestSandboxedProcessorDiesWithItsWorker for the sandbox).
	worker.Env = append(os.Environ(), orphanHelperEnv+"="+dir, orphanSandboxEnv+"="+SandboxOff)
	worker.Stdout, worker.Stderr = out, out
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { worker.Wait(); close(exited) }()
	t.Cleanup(func() { worker.Process.Kill(); <-exited })

	// Wait until the processor runs, its group is recorded and both of its
	// processes have written their PIDs.
	pgid := readPIDWhenWritten(t, filepath.Join(dir, "started"), exited, outPath)
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	leader := readPIDWhenWritten(t, filepath.Join(dir, "work", "leader.pid"), exited, outPath)
	child := readPIDWhenWritten(t, filepath.Join(dir, "work", "child.pid"), exited, outPath)
	if leader != pgid {
		t.Fatalf("recorded process group %d, want the leader's PID %d", pgid, leader)
	}
	v, err := volume.Open(filepath.Join(dir, "vol"))
	if err != nil {
		t.Fatal(err)
	}

	// The worker lives: its job is locked and nothing is killed.
	if _, err := v.LockJob(job); !errors.Is(err, volume.ErrLocked) {
		t.Fatalf("LockJob while the worker lives = %v, want ErrLocked", err)
	}
	for _, pid := range []int{leader, child} {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("process %d of the processor was killed while its worker lives: %v", pid, err)
		}
	}

	if err := worker.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not exit within 20s of SIGKILL")
	}
	assertGone(t, leader) // the parent-death signal

	if !alive(child) {
		t.Fatal("the grandchild died with the worker: this test no longer shows that LockJob reaps it")
	}
	lock, err := v.LockJob(job)
	if err != nil {
		t.Fatalf("LockJob after the worker died = %v, want the lock (the leftover grandchild reaped)", err)
	}
	defer lock.Unlock()
	assertGone(t, child)
}

const job = "0123456789abcdef0123456789abcdef"

// readPIDWhenWritten waits (bounded) for path to hold a number. It fails
// at once if the worker exited meanwhile.
func readPIDWhenWritten(t *testing.T, path string, exited <-chan struct{}, outPath string) int {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				t.Fatalf("%s holds %q", path, b)
			}
			return pid
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(outPath)
			t.Fatalf("the worker exited before %s was written:\n%s", path, out)
		case <-deadline:
			t.Fatalf("%s not written within 20s", path)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestSandboxedProcessorDiesWithItsWorker: as above, in the sandbox. The
// worker (this test binary in helper mode) is killed with SIGKILL while its
// sandboxed processor and a background child of it run, with the job's
// lock inherited through bwrap. Everything the processor started is gone
// within a second (bwrap dies with the worker, and its PID namespace with
// it), so the lock is free for the next worker at once.
func TestSandboxedProcessorDiesWithItsWorker(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	// With limits, the worker starts the limits shim, which execs bwrap:
	// the parent-death signal must survive that.
	for _, limits := range []bool{false, true} {
		t.Run(fmt.Sprintf("limits=%v", limits), func(t *testing.T) {
			t.Parallel()
			sandboxedProcessorDiesWithItsWorker(t, limits)
		})
	}
}

func sandboxedProcessorDiesWithItsWorker(t *testing.T, limits bool) {
	dir := t.TempDir()
	writeExecutable(t, filepath.Join(dir, "proc.sh"), `#!/bin/sh
sleep 1000 &
ulimit -n > "$CONVEYOR_WORK_DIR/nofile"
readlink /proc/self/fd/3 > "$CONVEYOR_WORK_DIR/lock.tmp" && mv "$CONVEYOR_WORK_DIR/lock.tmp" "$CONVEYOR_WORK_DIR/lock"
sleep 1000
`)
	for _, d := range []string{"out", "work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "input"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(dir, "worker.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	worker := exec.Command(os.Args[0], "-test.run=^$")
	worker.Env = append(os.Environ(), orphanHelperEnv+"="+dir, orphanSandboxEnv+"="+SandboxRequired)
	if limits {
		worker.Env = append(worker.Env, orphanLimitsEnv+"=1")
	}
	worker.Stdout, worker.Stderr = out, out
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { worker.Wait(); close(exited) }()
	t.Cleanup(func() { worker.Process.Kill(); <-exited })

	pgid := readPIDWhenWritten(t, filepath.Join(dir, "started"), exited, outPath)
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	deadline := time.Now().Add(20 * time.Second)
	var lockPath []byte
	for lockPath, err = os.ReadFile(filepath.Join(dir, "work", "lock")); err != nil; lockPath, err = os.ReadFile(filepath.Join(dir, "work", "lock")) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(outPath)
			t.Fatalf("the sandboxed processor did not start: %v\n%s", err, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(lockPath)), job+".lock") {
		t.Fatalf("descriptor 3 in the sandbox is %q, want the job's lock", lockPath)
	}
	if nofile, _ := os.ReadFile(filepath.Join(dir, "work", "nofile")); limits != (string(nofile) == "256\n") {
		t.Fatalf("limits %v, but the processor's open files limit is %q", limits, nofile)
	}
	// bwrap, its init, the shell and its two sleeps.
	if n := len(groupAlive(pgid)); n < 4 {
		t.Fatalf("process group %d has %d live processes, want the sandbox's 4 or more", pgid, n)
	}
	v, err := volume.Open(filepath.Join(dir, "vol"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.LockJob(job); !errors.Is(err, volume.ErrLocked) {
		t.Fatalf("LockJob while the worker lives = %v, want ErrLocked", err)
	}

	if err := worker.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not exit within 20s of SIGKILL")
	}
	waitGroupGone(t, pgid, time.Second)
	lock, err := v.LockJob(job)
	if err != nil {
		t.Fatalf("LockJob after the worker and its sandbox died = %v, want the lock", err)
	}
	lock.Unlock()
}
