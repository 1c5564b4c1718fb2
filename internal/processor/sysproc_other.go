//go:build !linux

package processor

import "syscall"

// sysProcAttr puts the processor in a process group of its own. Without
// Linux's parent-death signal, a processor outlives a worker that was
// killed.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// rlimitNproc is RLIMIT_NPROC, which package syscall does not name.
const rlimitNproc = 7
