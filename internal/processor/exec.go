package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// killGrace is how long a processor's process group has between SIGTERM and
// SIGKILL. A variable so tests can shorten it.
var killGrace = 5 * time.Second

// pipeGrace bounds how long Run waits for the log pipes to close after the
// processor itself has exited, in case a process it started keeps them open.
var pipeGrace = 2 * time.Second

// Defaults for the minimal environment when Conveyor's own lacks them.
const (
	defaultPath = "/usr/local/bin:/usr/bin:/bin"
	defaultLang = "C.UTF-8"
)

// external runs an executable as a processor.
type external struct {
	name    string   // base name of argv[0]
	path    string   // absolute path of the executable, resolved by New
	argv    []string // as configured; argv[0] is passed unchanged
	env     []string // Config.Env
	timeout time.Duration
	sandbox *sandbox // nil: runs unsandboxed
	scope   *scope   // nil: no systemd scope
	limits  Limits
	note    string // how it runs, for the log at start (SandboxNote)
}

var _ Processor = (*external)(nil)

// Name returns the base name of the executable.
func (p *external) Name() string { return p.name }

// Run starts the executable in its own process group with the contract
// environment, and waits for it, the timeout, or ctx, whichever comes first.
// On Linux the processor is killed if the worker dies, and the job's lock
// (env.Lock) is inherited by the processor's processes.
// On timeout or cancellation the group gets SIGTERM, then SIGKILL after
// killGrace. Processes left in the group after the processor exits are
// killed too, so Run leaves nothing behind (except processes that moved to
// another process group or session on purpose).
func (p *external) Run(ctx context.Context, env Env, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	for _, f := range []struct{ name, path string }{
		{"Input", env.Input}, {"OutputDir", env.OutputDir}, {"WorkDir", env.WorkDir},
	} {
		if err := checkAbs(f.name, f.path); err != nil {
			return fmt.Errorf("processor %s: %w", p.name, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("processor %s: %w", p.name, err)
	}
	if _, err := os.Stat(p.path); errors.Is(err, fs.ErrNotExist) {
		return p.notFound("is missing")
	}

	path, args, unit := p.commandLine(env)
	attr := sysProcAttr()
	if p.sandbox != nil {
		// A session of its own (and so a process group whose ID is the
		// leader's PID, as with Setpgid): the sandbox cannot reach the
		// worker's terminal, if it has one (TIOCSTI).
		attr.Setpgid, attr.Setsid = false, true
	}
	tail := &tailWriter{}
	out := io.MultiWriter(tail, log)
	cmd := &exec.Cmd{
		Path:        path,
		Args:        args,
		Env:         p.environ(env),
		Dir:         env.WorkDir,
		Stdout:      out, // one writer for both streams: os/exec then uses one pipe,
		Stderr:      out, // so the log never sees concurrent writes
		SysProcAttr: attr,
		WaitDelay:   pipeGrace,
	}
	if env.Lock != nil {
		cmd.ExtraFiles = []*os.File{env.Lock} // descriptor 3
	}
	waitc := make(chan error, 1)
	if err := startOnLockedThread(cmd, waitc); err != nil {
		return p.startError(err, env)
	}
	pgid := cmd.Process.Pid // Setpgid with Pgid 0: the group ID is the leader's PID
	if env.Started != nil {
		env.Started(pgid)
	}

	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	var waitErr error
	var timedOut, cancelled bool
	select {
	case waitErr = <-waitc:
	case <-timer.C:
		timedOut = true
	case <-ctx.Done():
		cancelled = true
	}
	if timedOut || cancelled {
		select {
		case waitErr = <-waitc: // finished just in time: that result stands
			timedOut, cancelled = false, false
		default:
			waitErr = terminate(pgid, waitc, p.sandbox != nil)
		}
	}
	// Whatever the processor left running in its group goes too. Wait has
	// returned, so the log is ours again for Conveyor's own notes.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(waitErr, exec.ErrWaitDelay) {
		fmt.Fprintf(log, "conveyor: processes started by %s kept its output open after it exited; they were killed\n", p.name)
	}

	switch {
	case timedOut:
		fmt.Fprintf(log, "conveyor: %s did not finish within %s; its process group was killed\n", p.name, p.timeout)
		return fmt.Errorf("processor %s: %w after %s (its process group was killed); raise processor.timeout or make the processor faster",
			p.name, ErrTimeout, p.timeout)
	case cancelled:
		fmt.Fprintf(log, "conveyor: %s was cancelled; its process group was killed\n", p.name)
		return fmt.Errorf("processor %s: %w", p.name, ctx.Err())
	case waitErr == nil, errors.Is(waitErr, exec.ErrWaitDelay):
		// ErrWaitDelay: exit status 0, but something it started held the
		// log open; that has been killed above.
		return nil
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		return p.exitError(ee, tail, unit)
	}
	return fmt.Errorf("processor %s: %w", p.name, waitErr)
}

// startOnLockedThread starts cmd and sends the result of its Wait on waitc.
//
// The processor's leader gets SIGKILL when its parent dies (Pdeathsig, see
// sysProcAttr), but Linux sends that signal when the parent *thread* that
// forked it exits, not the process. Go threads come and go: a goroutine
// that ends while locked to its thread takes the thread with it, and
// would take the processor too. So the fork happens on a goroutine that
// locks its thread and keeps it until the process has been waited for:
// that thread then lives exactly as long as the processor needs it, and
// dies only with the worker.
func startOnLockedThread(cmd *exec.Cmd, waitc chan<- error) error {
	startc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			startc <- err
			return
		}
		startc <- nil
		waitc <- cmd.Wait()
	}()
	return <-startc
}

// terminate stops the process group: SIGTERM, then SIGKILL after killGrace.
// It returns the result of Wait. In the sandbox, SIGTERM spares the group's
// leader, bwrap: its death would end the sandbox before the grace.
func terminate(pgid int, waitc <-chan error, sandboxed bool) error {
	if sandboxed {
		signalGroupButLeader(pgid, syscall.SIGTERM)
	} else {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
	}
	grace := time.NewTimer(killGrace)
	defer grace.Stop()
	select {
	case err := <-waitc:
		return err
	case <-grace.C:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return <-waitc
}

// environ builds the processor's environment: a minimal base, then
// Config.Env, then the contract variables (last, so they always win). The
// object key travels only here, never in argv or through a shell.
func (p *external) environ(env Env) []string {
	home := getenvOr("HOME", env.WorkDir)
	if p.sandbox != nil {
		home = env.WorkDir // the worker's home is not in the sandbox
	}
	e := []string{
		"PATH=" + getenvOr("PATH", defaultPath),
		"HOME=" + home,
		"LANG=" + getenvOr("LANG", defaultLang),
		"TMPDIR=" + env.WorkDir,
	}
	e = append(e, p.env...)
	return append(e,
		"CONVEYOR_INPUT="+env.Input,
		"CONVEYOR_OUTPUT_DIR="+env.OutputDir,
		"CONVEYOR_WORK_DIR="+env.WorkDir,
		"CONVEYOR_JOB_ID="+env.JobID,
		"CONVEYOR_INPUT_BUCKET="+env.InputBucket,
		"CONVEYOR_INPUT_KEY="+env.InputKey,
	)
}

func getenvOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

// startError classifies a failure to start: a missing or non-executable
// program (or #! interpreter) is permanent; anything else may be transient.
func (p *external) startError(err error, env Env) error {
	fi, serr := os.Stat(p.path)
	switch {
	case errors.Is(serr, fs.ErrNotExist):
		return p.notFound("is missing")
	case serr == nil && fi.Mode()&0o111 == 0:
		return p.notFound("is not executable")
	}
	if errors.Is(err, fs.ErrNotExist) {
		if _, werr := os.Stat(env.WorkDir); werr != nil {
			return fmt.Errorf("processor %s: work dir: %w", p.name, werr)
		}
		return p.notFound("exists but its interpreter (#! line) was not found")
	}
	return fmt.Errorf("processor %s: start %s: %w", p.name, p.path, err)
}

func (p *external) notFound(what string) error {
	return fmt.Errorf("processor %s: %w: %s %s; reinstall it or fix processor.command", p.name, ErrNotFound, p.path, what)
}
