//go:build !linux

package processor

import "syscall"

// sysProcAttr puts the processor in a process group of its own. Without
// Linux's parent-death signal, a processor outlives a worker that was
// killed.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
