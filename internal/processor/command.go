package processor

import (
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
)

// selfExe is how the worker re-executes itself as the limits shim: the
// kernel's link to the running binary, valid even if the file was replaced
// on disk since.
const selfExe = "/proc/self/exe"

// commandLine returns what Run starts for env: the processor, inside the
// sandbox if there is one, under the limits shim if rlimits apply, in a
// systemd scope if one holds the cgroup limits; outermost first:
//
//	systemd-run --scope ... -- /proc/self/exe <shimArg> as=... -- bwrap ... -- processor args...
//
// Each layer execs the next in the same process, so the process Run waits
// for, its group and its parent-death signal stay the processor's. unit is
// the scope's name, or "".
func (p *external) commandLine(env Env) (path string, args []string, unit string) {
	path, args = p.path, p.argv
	if p.sandbox != nil {
		args = p.sandbox.args(env, p.path, p.argv)
		path = args[0]
	}
	rl := p.limits
	if p.scope != nil {
		rl = p.scope.rlimits(rl)
	}
	if !rl.IsZero() {
		args = append([]string{selfExe, shimArg}, shimArgs(rl, path, args)...)
		path = selfExe
	}
	if p.scope != nil {
		var b [4]byte
		crand.Read(b[:])
		unit = "conveyor-" + env.JobID + "-" + hex.EncodeToString(b[:])
		args = append(p.scope.args(unit, p.limits), append([]string{path}, args[1:]...)...)
		path = args[0]
	}
	return path, args, unit
}

// limitsNote describes the limits for the note logged at start.
func limitsNote(l Limits, sc *scope) string {
	if l.IsZero() {
		return ""
	}
	var parts []string
	if l.Memory > 0 {
		how := "address space, RLIMIT_AS"
		if sc != nil {
			how = "cgroup MemoryMax in a systemd scope"
		}
		parts = append(parts, fmt.Sprintf("memory %s (%s)", FormatSize(l.Memory), how))
	}
	if l.CPUTime > 0 {
		parts = append(parts, fmt.Sprintf("cpu_time %s", l.CPUTime))
	}
	if l.OpenFiles > 0 {
		parts = append(parts, fmt.Sprintf("open_files %d", l.OpenFiles))
	}
	if l.Processes > 0 {
		how := "RLIMIT_NPROC, counting all of the worker user's processes"
		if sc != nil {
			how = "cgroup TasksMax"
		}
		parts = append(parts, fmt.Sprintf("processes %d (%s)", l.Processes, how))
	}
	return "; limits: " + strings.Join(parts, ", ")
}
