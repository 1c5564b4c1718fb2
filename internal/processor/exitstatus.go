package processor

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"unicode"
)

// tailSize is how much of the end of a processor's output Run keeps to
// explain its exit.
const tailSize = 4 << 10

// maxLastLine bounds ExitError.LastLine.
const maxLastLine = 300

// tailWriter keeps the last tailSize bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) >= tailSize {
		t.buf = append(t.buf[:0], p[len(p)-tailSize:]...)
		return len(p), nil
	}
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// lastLine returns the last non-empty line of s, printable and short
// enough for a job record.
func lastLine(s string) string {
	s = strings.TrimRightFunc(s, unicode.IsSpace)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxLastLine {
		cut := maxLastLine
		for cut > 0 && !utf8Start(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// oomMarkers are what common runtimes print when an allocation fails:
// under an address-space limit a processor does not get killed, its
// allocation fails, and how it ends depends on the program.
var oomMarkers = []string{
	"memoryerror",                    // Python
	"out of memory",                  // Go runtime, many C programs, "JavaScript heap out of memory"
	"cannot allocate memory",         // strerror(ENOMEM)
	"bad_alloc",                      // C++
	"outofmemoryerror",               // Java
	"memory exhausted",               // bison, glibc
	"memory allocation failed",       // Rust's alloc error handler, others
	"failed to reserve",              // Go's runtime, starting under too small an address space
	"could not reserve enough space", // the JVM, likewise
}

// outOfMemory reports whether a processor's last output says that an
// allocation failed.
func outOfMemory(tail string) bool {
	t := strings.ToLower(tail)
	for _, m := range oomMarkers {
		if strings.Contains(t, m) {
			return true
		}
	}
	return false
}

// shimFailure is how the limits shim's own error line starts.
const shimFailure = "conveyor: limits shim: "

// exitError explains a non-zero exit from the processor's status and the
// end of its output: which signal (bwrap reports a processor killed by
// signal n as exit 128+n, as shells do), whether the memory limit was hit,
// or whether the sandbox or the shim, not the processor, failed.
func (p *external) exitError(ee *exec.ExitError, tail *tailWriter, unit string) error {
	out := tail.String()
	e := &ExitError{Code: ee.ExitCode(), LastLine: lastLine(out)}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Code, e.Signal = -1, signalName(ws.Signal())
	} else if p.sandbox != nil && e.Code > 128 && e.Code <= 128+64 {
		e.Code, e.Signal = -1, signalName(syscall.Signal(e.Code-128))
	}
	switch {
	case p.sandbox != nil && e.Code == 1 && strings.HasPrefix(e.LastLine, "bwrap: execvp ") &&
		strings.HasSuffix(e.LastLine, "No such file or directory"):
		return p.notFound("or its interpreter (#! line) is not visible in the sandbox (it shows only " +
			strings.Join(systemDirs, ", ") + " and the processor's directory, without the worker's data dir and configuration); " +
			"install it there, or set processor.sandbox: off to run it outside")
	case p.sandbox != nil && e.Code == 1 && strings.HasPrefix(e.LastLine, "bwrap: "):
		return fmt.Errorf("processor %s: the sandbox could not start it: %s", p.name, e.LastLine)
	case e.Code == shimFailed && strings.HasPrefix(e.LastLine, shimFailure):
		if strings.Contains(e.LastLine, syscall.ENOENT.Error()) {
			return p.notFound("exists but its interpreter (#! line) was not found")
		}
		return fmt.Errorf("processor %s: %s", p.name, strings.TrimPrefix(e.LastLine, "conveyor: "))
	}
	if p.limits.Memory > 0 {
		switch {
		case p.scope != nil:
			// Under a cgroup limit the kernel's OOM killer ends the
			// processor with SIGKILL; memory.events says so until
			// systemd removes the scope's cgroup. A SIGKILL the worker
			// did not send (it sends none before Wait returns) has no
			// other likely sender.
			if oomKilled(unit) || e.Signal == "SIGKILL" {
				e.MemoryLimit = p.limits.Memory
			}
		case outOfMemory(out):
			e.MemoryLimit = p.limits.Memory
		}
	}
	return e
}
