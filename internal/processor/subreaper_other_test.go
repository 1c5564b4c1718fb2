//go:build !linux

package processor

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

func becomeSubreaper() {}

// assertGone polls, bounded, until pid is gone: without a subreaper the
// orphan is reaped by init.
func assertGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still exists 10s after Run returned", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
