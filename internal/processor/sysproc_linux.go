package processor

import "syscall"

// sysProcAttr puts the processor in a process group of its own, so that it
// and everything it starts can be signalled at once, and has the kernel
// kill it when the worker dies (see startOnLockedThread). Processes it
// starts do not inherit the parent-death signal: the group recorded with
// env.Started is how a later worker finds them.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// rlimitNproc is RLIMIT_NPROC, which package syscall does not name.
const rlimitNproc = 6
