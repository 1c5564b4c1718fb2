package processor

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

const prSetChildSubreaper = 36

func becomeSubreaper() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

// assertGone waits (bounded) for pid to exit, reaps it if it became our
// child, and asserts that it no longer exists.
func assertGone(t *testing.T, pid int) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, syscall.ECHILD) {
			t.Fatalf("wait4(%d): %v", pid, err)
		}
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("process %d still running 10s after Run returned", pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("kill(%d, 0) = %v, want ESRCH: the processor's child survived", pid, err)
	}
}
