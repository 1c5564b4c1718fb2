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
// This package is not the worker: it does not fetch inputs, upload outputs,
// retry, or record outcomes. It runs one attempt and classifies the result
// (success, *ExitError, ErrTimeout, ErrNotFound, cancellation) so the worker
// can decide what to do next.
package processor
