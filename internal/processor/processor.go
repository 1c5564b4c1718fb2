package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Env is what the worker hands a processor for one attempt; all paths are
// absolute.
type Env struct {
	JobID       string // the job's ID (32 lowercase hex digits)
	InputBucket string // the bucket the input object was uploaded to
	InputKey    string // the decoded object key; untrusted, never put in argv or a shell
	Input       string // the input file on the volume
	OutputDir   string // empty directory; everything left here is uploaded
	WorkDir     string // scratch, removed after success

	// Lock, when set, is the job's open lock file (volume.Lock.File). An
	// external processor inherits it as file descriptor 3, and so does
	// everything the processor starts: the job stays locked while any of
	// them lives, even after the worker died, so a restarted worker cannot
	// run the job a second time beside them. Built-ins ignore it.
	Lock *os.File
	// Started, when set, is called once with the process group of an
	// external processor as soon as it started, before Run waits for it:
	// the worker records it (volume.Lock.SetProcessGroup) so that, should
	// the worker die, the next one can kill what the processor left.
	// Built-ins never call it.
	Started func(pgid int)
}

// Processor runs one attempt of one job.
type Processor interface {
	// Name identifies the processor in logs and job records: the built-in's
	// name, or the base name of an external processor's executable.
	Name() string
	// Run processes env.Input and leaves its results in env.OutputDir.
	// Everything the processor prints goes to log (the job log), never to
	// Conveyor's own stdout/stderr. Returns nil on success; an *ExitError for a
	// non-zero exit; an error wrapping ErrTimeout when Config.Timeout passed
	// (the whole process group was killed); an error wrapping ErrNotFound when
	// the executable is missing (permanent: the worker will not retry it).
	// When ctx is cancelled first, the error wraps ctx.Err().
	Run(ctx context.Context, env Env, log io.Writer) error
}

// ExitDataErr is the exit code (EX_DATAERR in sysexits.h) by which a
// processor says that its input can never succeed: the worker does not
// retry the job, which is dead at once with the processor's last line of
// output as the cause.
const ExitDataErr = 65

// ExitError reports that an external processor did not exit with status 0.
type ExitError struct {
	// Code is the exit status, or -1 when the process was killed by a signal.
	Code int
	// Signal names the signal that killed the process ("SIGKILL"), if any.
	Signal string
	// LastLine is the last non-empty line the processor printed (stdout
	// and stderr share one pipe), made printable and cut to
	// maxLastLine bytes; "" when it printed nothing.
	LastLine string
	// MemoryLimit is the processor's memory limit in bytes when its end
	// shows that it ran out of memory under that limit; 0 otherwise.
	MemoryLimit int64
}

// Error describes the exit the way a person reading the job record wants it.
func (e *ExitError) Error() string {
	switch {
	case e.MemoryLimit > 0:
		msg := fmt.Sprintf("processor exceeded its memory limit (%s)", FormatSize(e.MemoryLimit))
		if e.Signal != "" {
			msg += " and was killed by signal " + e.Signal
		}
		if e.LastLine != "" {
			msg += ": " + e.LastLine
		}
		return msg + "; raise processor.limits.memory"
	case e.Signal == "SIGXCPU":
		return "processor exceeded its CPU time limit (killed by signal SIGXCPU); raise processor.limits.cpu_time"
	case e.Signal != "":
		return "processor killed by signal " + e.Signal
	case e.Code == ExitDataErr && e.LastLine != "":
		return "processor rejected the input (exit 65): " + e.LastLine
	case e.Code == ExitDataErr:
		return "processor rejected the input (exit 65) without printing why"
	}
	return fmt.Sprintf("processor exited with code %d", e.Code)
}

// ErrTimeout is wrapped by Run's error when the attempt ran longer than
// Config.Timeout and was killed.
var ErrTimeout = errors.New("processor timed out")

// ErrNotFound is wrapped by Run's error when the processor's executable (or
// its #! interpreter) is missing or not executable. Retrying cannot help.
var ErrNotFound = errors.New("processor executable not found")

// Builtins lists the names of the built-in processors, default first.
func Builtins() []string {
	return []string{"report", "zstd", "noop"}
}

// New returns the processor c describes, after applying defaults and
// validating it.
func New(c Config) (Processor, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(c.Command) > 0 {
		path, err := c.resolveCommand()
		if err != nil {
			return nil, err
		}
		name := filepath.Base(c.Command[0])
		sb, note, err := resolveSandbox(c, name)
		if err != nil {
			return nil, err
		}
		if !c.Limits.IsZero() && !shimReady {
			return nil, errors.New("processor.limits cannot be applied: this program's main does not call processor.HandleShim")
		}
		sc := detectScope("/", c.Limits, os.Geteuid(), exec.LookPath)
		return &external{
			name:    name,
			path:    path,
			argv:    append([]string(nil), c.Command...),
			env:     append([]string(nil), c.Env...),
			timeout: c.Timeout,
			sandbox: sb,
			scope:   sc,
			limits:  c.Limits,
			note:    note + limitsNote(c.Limits, sc),
		}, nil
	}
	b := &builtin{name: c.Name, timeout: c.Timeout}
	if c.Sandbox == SandboxRequired || c.Network || !c.Limits.IsZero() {
		b.note = fmt.Sprintf("built-in processor %s runs inside the worker: processor.sandbox, network and limits apply to external processors (processor.command) only", c.Name)
	}
	switch c.Name {
	case "report":
		b.run = runReport
	case "zstd":
		b.run = runZstd
	case "noop":
		b.run = func(context.Context, Env, io.Writer) error { return nil }
	}
	return b, nil
}

// checkAbs rejects relative paths: the embedded S3 server changes the
// process's working directory, so a relative path would point elsewhere.
func checkAbs(field, path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("env.%s %q is not an absolute path", field, path)
	}
	return nil
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP:  "SIGHUP",
	syscall.SIGINT:  "SIGINT",
	syscall.SIGQUIT: "SIGQUIT",
	syscall.SIGILL:  "SIGILL",
	syscall.SIGTRAP: "SIGTRAP",
	syscall.SIGABRT: "SIGABRT",
	syscall.SIGBUS:  "SIGBUS",
	syscall.SIGFPE:  "SIGFPE",
	syscall.SIGKILL: "SIGKILL",
	syscall.SIGUSR1: "SIGUSR1",
	syscall.SIGSEGV: "SIGSEGV",
	syscall.SIGUSR2: "SIGUSR2",
	syscall.SIGPIPE: "SIGPIPE",
	syscall.SIGALRM: "SIGALRM",
	syscall.SIGTERM: "SIGTERM",
	syscall.SIGXCPU: "SIGXCPU",
	syscall.SIGXFSZ: "SIGXFSZ",
}

func signalName(s syscall.Signal) string {
	if n, ok := signalNames[s]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}
