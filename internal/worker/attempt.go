package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/volume"
)

// errInputChanged means the bytes fetched are not the version the job
// names; the fetch is retried.
var errInputChanged = errors.New("fetched input is not the version the job names")

// freshJob is the age under which an attempt skips the early check that
// its input is current (the check before publishing stays).
const freshJob = 2 * time.Second

type attemptResult struct {
	workDir string
	log     string
	logFrom int64 // where this attempt's part of the log starts
	size    int64 // -1 when the input was not fetched
	sha256  string
	outputs []job.Output
	timings job.Timings
}

// attempt runs one attempt of a claimed job on the volume: fetch, process,
// publish. An input version that is no longer current ends it with a
// *supersededError before any work, or before publishing.
func (w *Worker) attempt(ctx context.Context, rec *job.Record, l *lease, lock *volume.Lock) (res attemptResult, err error) {
	start := time.Now()
	res.size = -1
	res.workDir, _ = w.vol.WorkDir(rec.ID)
	res.log, _ = w.vol.LogPath(rec.ID)
	defer func() { res.timings.TotalMS = time.Since(start).Milliseconds() }()

	logf, err := os.OpenFile(res.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return res, fmt.Errorf("open job log: %w", err)
	}
	defer logf.Close()
	if fi, err := logf.Stat(); err == nil {
		res.logFrom = fi.Size()
	}
	fmt.Fprintf(logf, "=== conveyor: job %s attempt %d/%d on %s at %s\n", rec.ID, rec.Attempt, rec.MaxAttempts, rec.Owner, time.Now().UTC().Format(time.RFC3339))
	defer func() {
		var sup *supersededError
		switch {
		case errors.As(err, &sup):
			fmt.Fprintf(logf, "=== conveyor: attempt %d superseded: %s; nothing published\n", rec.Attempt, sup.reason)
		case err != nil:
			fmt.Fprintf(logf, "=== conveyor: attempt %d failed: %v\n", rec.Attempt, err)
		default:
			fmt.Fprintf(logf, "=== conveyor: attempt %d succeeded: %d output(s)\n", rec.Attempt, len(res.outputs))
		}
	}()

	// A newer version makes this one moot: do not even fetch it. A job
	// created a moment ago is almost always current, and publishing checks
	// again anyway: the HEAD is saved for it.
	if rec.Attempt > 1 || w.now().Sub(rec.CreatedAt) > freshJob {
		if err := w.checkCurrent(ctx, rec); err != nil {
			return res, err
		}
	}
	// A previous attempt's leftovers would mix into this attempt's outputs.
	if err := os.RemoveAll(res.workDir); err != nil {
		return res, fmt.Errorf("clear work dir: %w", err)
	}
	env := processor.Env{
		JobID:       rec.ID,
		InputBucket: rec.Bucket,
		InputKey:    rec.Key,
		Input:       filepath.Join(res.workDir, "input", "input"+safeExt(rec.Key)),
		OutputDir:   filepath.Join(res.workDir, "output"),
		WorkDir:     filepath.Join(res.workDir, "scratch"),
	}
	for _, d := range []string{filepath.Dir(env.Input), env.OutputDir, env.WorkDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return res, fmt.Errorf("prepare work dir: %w", err)
		}
	}
	if err := w.vol.CheckSpace(rec.Size * 2); err != nil {
		return res, err
	}

	t := time.Now()
	res.size, res.sha256, err = w.fetch(ctx, rec, env.Input)
	res.timings.FetchMS = time.Since(t).Milliseconds()
	if err != nil {
		return res, err
	}
	fmt.Fprintf(logf, "=== conveyor: fetched s3://%s/%s version %s (%d bytes, sha256 %s)\n", rec.Bucket, job.Printable(rec.Key), job.Printable(rec.InputVersion()), res.size, res.sha256)

	t = time.Now()
	err = w.runProcessor(ctx, env, logf, lock)
	res.timings.ProcessMS = time.Since(t).Milliseconds()
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errLeaseLost) {
			return res, cause
		}
		return res, fmt.Errorf("processor %s: %w", w.proc.Name(), err)
	}

	t = time.Now()
	files, err := collectOutputs(env.OutputDir, logf)
	if err == nil {
		res.outputs, err = w.publish(ctx, rec, l, files, logf)
	}
	res.timings.UploadMS = time.Since(t).Milliseconds()
	return res, err
}

// runProcessor runs the processor with its output to the job log, capped
// at Config.LogMaxBytes for this attempt. An external processor inherits
// the job's volume lock and reports its process group to it: the lock
// stays held while any process it started lives, and a restarted worker
// that finds it held by a dead worker's leftovers kills them first.
func (w *Worker) runProcessor(ctx context.Context, env processor.Env, logf *os.File, lock *volume.Lock) error {
	env.Lock = lock.File()
	env.Started = func(pgid int) {
		if err := lock.SetProcessGroup(pgid); err != nil {
			w.logf("job %s: record the processor's process group: %v", env.JobID, err)
		}
	}
	capped := newCappedWriter(logf, w.cfg.LogMaxBytes)
	err := w.proc.Run(ctx, env, capped)
	if cerr := capped.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("write job log: %w", cerr)
	}
	return err
}
