package processor

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Limits bounds the resources of an external processor; a zero field is
// no limit. Built-ins run inside the worker and are not limited.
//
// Every limit is applied as an rlimit to the processor and what it starts
// (see HandleShim). Where systemd runs as PID 1 and the worker is root, the
// processor also runs in a transient systemd scope, and Memory and
// Processes become cgroup limits (MemoryMax, TasksMax) on the processor's
// processes instead of the rlimits.
type Limits struct {
	// Memory in bytes. As an rlimit it bounds the address space
	// (RLIMIT_AS), which counts reserved as well as used memory: programs
	// that reserve much (Go, Java) need a limit well above their use. As a
	// cgroup limit (MemoryMax, swap off) it bounds resident memory.
	Memory int64
	// CPUTime bounds the CPU time of each process (RLIMIT_CPU, rounded up to
	// whole seconds); a process past it gets SIGXCPU.
	CPUTime time.Duration
	// OpenFiles bounds the descriptors each process may open (RLIMIT_NOFILE).
	OpenFiles int
	// Processes bounds how many processes the processor may run. As an
	// rlimit (RLIMIT_NPROC) the kernel counts every process of the worker's
	// user on the machine, so it bounds a processor well only when the
	// worker runs as a user of its own; as a cgroup limit (TasksMax) it
	// counts the processor's own.
	Processes int
}

// IsZero reports whether no limit is set.
func (l Limits) IsZero() bool { return l == Limits{} }

// validate names the first invalid limit.
func (l Limits) validate() error {
	switch {
	case l.Memory < 0 || l.Memory > 0 && l.Memory < minMemory:
		return fmt.Errorf("processor.limits.memory must be at least %s (or unset for no limit), got %s", FormatSize(minMemory), FormatSize(l.Memory))
	case l.CPUTime < 0 || l.CPUTime > 0 && l.CPUTime < time.Second:
		return fmt.Errorf("processor.limits.cpu_time must be at least 1s (or unset for no limit), got %s", l.CPUTime)
	case l.OpenFiles < 0 || l.OpenFiles > 0 && l.OpenFiles < 16:
		return fmt.Errorf("processor.limits.open_files must be at least 16 (or unset for no limit), got %d", l.OpenFiles)
	case l.Processes < 0:
		return fmt.Errorf("processor.limits.processes must be positive (or unset for no limit), got %d", l.Processes)
	}
	return nil
}

// minMemory is the smallest memory limit accepted: below it even a shell
// or the sandbox itself cannot start.
const minMemory = 16 << 20

// ParseSize reads a size such as "512MiB", "2GiB", "64KiB", "1GB", "500MB"
// or a plain byte count. Binary (KiB, MiB, GiB, TiB) and decimal (KB, MB,
// GB, TB) units are both accepted; a bare "M" or "G" is refused as
// ambiguous.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{
		{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
	}
	num, mult := strings.TrimSpace(s), 1.0
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || f*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a size; use a value like 512MiB, 2GiB or a byte count", s)
	}
	return int64(f * mult), nil
}

// FormatSize writes n the way ParseSize reads it, in the largest binary
// unit that keeps it readable ("64 MiB", "1.5 GiB").
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			if n%u.size == 0 {
				return fmt.Sprintf("%d %s", n/u.size, u.name)
			}
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.size), u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// The limits shim: Go cannot set rlimits for a child only (setrlimit acts
// on the calling process, and os/exec has no hook between fork and exec),
// so the worker starts its own executable with shimArg, which sets the
// limits on itself and execs the processor (or the sandbox around it):
// rlimits survive exec and are inherited by everything the processor
// starts. No other program is needed.
const shimArg = "__conveyor-processor-limits"

// shimReady is set by HandleShim: only a program whose main calls it can
// be re-executed as the shim.
var shimReady bool

// HandleShim must be called first thing in main by every program that runs
// external processors with Limits (the conveyor binary; test binaries in
// their TestMain). When the process was started as the limits shim it
// sets the limits and execs the processor, and never returns; otherwise it
// returns at once. Without it, New refuses Limits.
func HandleShim() {
	shimReady = true
	if len(os.Args) < 2 || os.Args[1] != shimArg {
		return
	}
	err := runShim(os.Args[2:])
	fmt.Fprintf(os.Stderr, "%s%v\n", shimFailure, err)
	os.Exit(shimFailed)
}

// shimFailed is the shim's exit code when it could not run the processor.
const shimFailed = 126

// shimArgs is the shim's command line after shimArg: name=value limits,
// "--", then the program's path and its argv.
func shimArgs(l Limits, path string, argv []string) []string {
	var a []string
	if l.Memory > 0 {
		a = append(a, "as="+strconv.FormatInt(l.Memory, 10))
	}
	if l.CPUTime > 0 {
		a = append(a, "cpu="+strconv.FormatInt(int64((l.CPUTime+time.Second-1)/time.Second), 10))
	}
	if l.OpenFiles > 0 {
		a = append(a, "nofile="+strconv.Itoa(l.OpenFiles))
	}
	if l.Processes > 0 {
		a = append(a, "nproc="+strconv.Itoa(l.Processes))
	}
	a = append(a, "--", path)
	return append(a, argv...)
}

// runShim sets the limits args name and execs the program; it returns
// only on failure.
func runShim(args []string) error {
	resources := map[string]int{
		"as": syscall.RLIMIT_AS, "cpu": syscall.RLIMIT_CPU,
		"nofile": syscall.RLIMIT_NOFILE, "nproc": rlimitNproc,
	}
	type limit struct {
		res int
		lim syscall.Rlimit
	}
	var limits []limit
	var as *syscall.Rlimit
	for len(args) > 0 && args[0] != "--" {
		name, v, _ := strings.Cut(args[0], "=")
		res, ok := resources[name]
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("bad limit %q", args[0])
		}
		lim := syscall.Rlimit{Cur: n, Max: n}
		switch res {
		case syscall.RLIMIT_CPU:
			// SIGXCPU at the limit says why; SIGKILL a second later if
			// it is ignored. (At an equal hard limit SIGKILL comes first.)
			lim.Max = n + 1
		case syscall.RLIMIT_AS:
			as = &lim
			args = args[1:]
			continue
		}
		limits = append(limits, limit{res, lim})
		args = args[1:]
	}
	if len(args) < 3 {
		return errors.New("no program to run")
	}
	for _, l := range limits {
		if err := syscall.Setrlimit(l.res, &l.lim); err != nil {
			return fmt.Errorf("rlimit %d: %w", l.res, err)
		}
	}
	if as == nil {
		// syscall.Exec also gives the program the RLIMIT_NOFILE soft
		// limit this process started with (Go raises its own).
		if err := syscall.Exec(args[1], args[2:], os.Environ()); err != nil {
			return fmt.Errorf("exec %s: %w", args[1], err)
		}
		return nil
	}
	// This process already maps more than a small address-space limit
	// allows, so once it is set nothing may allocate: the exec's
	// arguments are prepared first and execve called directly. (The
	// program then keeps the RLIMIT_NOFILE soft limit Go raised this
	// process to, unless open_files sets one.)
	path, err := syscall.BytePtrFromString(args[1])
	if err != nil {
		return err
	}
	argv, err := syscall.SlicePtrFromStrings(args[2:])
	if err != nil {
		return err
	}
	envv, err := syscall.SlicePtrFromStrings(os.Environ())
	if err != nil {
		return err
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, as); err != nil {
		return fmt.Errorf("rlimit as: %w", err)
	}
	_, _, errno := syscall.RawSyscall(syscall.SYS_EXECVE,
		uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])))
	return fmt.Errorf("exec %s: %w", args[1], errno)
}
