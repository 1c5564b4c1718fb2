package processor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// scope runs a processor in a transient systemd scope, so that the memory
// and process limits are cgroup limits on the processor's own processes
// (MemoryMax on resident memory, swap off; TasksMax) rather than rlimits.
// It is used only where systemd runs as PID 1 and the worker is root, as
// on an EC2 worker: systemd-run --scope registers the scope for its own
// process and then execs the command, so the process started stays the
// one the worker waits for, with the same process group, parent-death
// signal and inherited descriptors.
type scope struct {
	systemdRun string // absolute path
}

// detectScope returns a scope when limits has a memory or process limit,
// systemd manages the machine (root is "/" but for tests) and the worker
// is root (euid), or nil. lookPath is exec.LookPath but for tests.
func detectScope(root string, limits Limits, euid int, lookPath func(string) (string, error)) *scope {
	if limits.Memory == 0 && limits.Processes == 0 || euid != 0 || !systemdBooted(root) {
		return nil
	}
	path, err := lookPath("systemd-run")
	if err != nil {
		return nil
	}
	return &scope{systemdRun: path}
}

// systemdBooted reports whether systemd runs as PID 1 under root, the way
// sd_booted(3) tells: /run/systemd/system exists.
func systemdBooted(root string) bool {
	fi, err := os.Stat(filepath.Join(root, "run", "systemd", "system"))
	return err == nil && fi.IsDir()
}

// args is the systemd-run command line that runs the rest of the command
// (appended by the caller after "--") in a scope named unit.
func (s *scope) args(unit string, l Limits) []string {
	a := []string{s.systemdRun, "--scope", "--quiet", "--collect",
		"--unit=" + unit, "--description=Conveyor processor"}
	if l.Memory > 0 {
		a = append(a, "-p", "MemoryMax="+strconv.FormatInt(l.Memory, 10), "-p", "MemorySwapMax=0")
	}
	if l.Processes > 0 {
		a = append(a, "-p", "TasksMax="+strconv.Itoa(l.Processes))
	}
	return append(a, "--")
}

// rlimits are the limits left to rlimits when the scope holds memory and
// processes as cgroup limits.
func (s *scope) rlimits(l Limits) Limits {
	l.Memory, l.Processes = 0, 0
	return l
}

// oomKilled reports whether the kernel's OOM killer killed a process of
// the scope unit, from its cgroup's memory.events (system.slice, where
// root's scopes go). It is false once systemd has removed the cgroup.
func oomKilled(unit string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/system.slice", unit+".scope", "memory.events"))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "oom_kill "); ok && v != "0" {
			return true
		}
	}
	return false
}
