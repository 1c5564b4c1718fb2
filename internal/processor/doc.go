// Package processor defines the processor contract — what the worker hands a
// processor for one attempt of one job and what it gets back — and ships the
// built-in processors ("report", "zstd", "noop") so that `conveyor up` does
// something useful with no setup.
//
// An external processor is any executable (Config.Command). It is started
// without a shell, in its own process group, with the job described only by
// CONVEYOR_* environment variables; its stdout and stderr go to the job log,
// and on timeout or cancellation the whole group is terminated. It dies
// with its worker (a parent-death signal) and inherits the job's volume
// lock as descriptor 3 (Env.Lock), so a leftover of a dead worker keeps the
// job locked until the next worker reaps it.
//
// Where bubblewrap (bwrap) is installed and works, an external processor
// runs in a sandbox (Config.Sandbox, see sandbox.go): it sees /usr, /bin,
// /lib*, /etc (without its secrets) and /opt read-only, plus its own
// directory; it reads its input and writes only its output and work
// directories and a private /tmp; it has its own PID, IPC and UTS
// namespaces, no network unless Config.Network, no capabilities and no
// new privileges, and the whole sandbox dies with the worker. Resource
// limits (Config.Limits) are rlimits set by a re-exec of the worker's own
// binary (HandleShim), or cgroup limits in a systemd scope where systemd
// runs. Built-ins run inside the worker: they are neither sandboxed nor
// limited.
//
// A processor that exits with ExitDataErr (65) says its input can never
// succeed; Run's *ExitError carries its last line of output for the
// job's cause, and says when the memory limit was exceeded.
//
// This package is not the worker: it does not fetch inputs, upload outputs,
// retry, or record outcomes. It runs one attempt and classifies the result
// (success, *ExitError, ErrTimeout, ErrNotFound, cancellation) so the worker
// can decide what to do next.
package processor
