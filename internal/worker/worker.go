package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/volume"
)

// ErrDead is returned by Run for a job that is dead (now or before).
var ErrDead = errors.New("job is dead")

// ErrBusy is returned by Run when another worker holds the job.
var ErrBusy = errors.New("job is running elsewhere")

// RetryError is returned by Run when the attempt failed and another is due
// after After (only without Config.RetryInProcess).
type RetryError struct {
	JobID string
	After time.Duration
	Cause string
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("job %s: attempt failed (%s); next attempt in %s", e.JobID, e.Cause, e.After.Round(time.Millisecond))
}

// Worker runs jobs on one volume.
type Worker struct {
	cfg   Config
	s3    *s3.Client
	store *jobstore.Store
	vol   *volume.Volume
	proc  processor.Processor
	now   func() time.Time
	// Logf receives one line per attempt outcome; nil is silent.
	Logf func(format string, args ...any)
	// OnChange, if set, is called with the record after each write of it
	// (claim, heartbeat, outcome). It must return quickly and must not keep
	// or modify the record.
	OnChange func(*job.Record)
}

// New returns a Worker. client reaches both the input and output buckets.
func New(cfg Config, client *s3.Client, store *jobstore.Store, vol *volume.Volume, proc processor.Processor) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, s3: client, store: store, vol: vol, proc: proc, now: time.Now}, nil
}

// Run does the job end to end. It returns nil when the job succeeded (now
// or earlier: a finished job is a no-op), ErrDead when it is dead, ErrBusy
// when another worker holds it, a *RetryError when an attempt failed and
// the caller should dispatch it again later, or the context's error when
// ctx ended mid-attempt (the record stays running and is taken over later).
func (w *Worker) Run(ctx context.Context, id string) error {
	if err := job.CheckID(id); err != nil {
		return err
	}
	lock, err := w.vol.LockJob(id)
	if errors.Is(err, volume.ErrLocked) {
		return fmt.Errorf("%w: job %s is running in another process on this volume", ErrBusy, id)
	}
	if err != nil {
		return err
	}
	defer lock.Unlock()
	for {
		err := w.runOnce(ctx, id)
		var re *RetryError
		if !w.cfg.RetryInProcess || !errors.As(err, &re) {
			return err
		}
		w.logf("job %s: retrying in %s", id, re.After.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(re.After):
		}
	}
}

func (w *Worker) changed(r *job.Record) {
	if w.OnChange != nil && r != nil {
		w.OnChange(r)
	}
}

func (w *Worker) logf(format string, args ...any) {
	if w.Logf != nil {
		w.Logf(format, args...)
	}
}

// runOnce claims the job and runs one attempt. The caller holds the job's
// volume lock, which proves that no other process on this volume runs it:
// a record still "running" under this volume's name is a crashed attempt
// and is taken over.
func (w *Worker) runOnce(ctx context.Context, id string) error {
	owner := w.vol.ID()
	var claimErr error
	rec, err := w.store.Update(ctx, id, func(r *job.Record) error {
		before := r.State
		claimErr = r.Claim(owner, w.now(), w.cfg.Lease, true)
		if claimErr != nil && r.State == before {
			return jobstore.ErrStop
		}
		return nil // claimed, or the claim itself ended the job (attempts used up)
	})
	if err != nil {
		return err
	}
	if claimErr == nil || rec.State.Terminal() {
		w.changed(rec)
	}
	switch {
	case claimErr == nil:
	case errors.Is(claimErr, job.ErrFinished):
		if rec.State == job.Succeeded {
			return nil
		}
		return fmt.Errorf("%w: %s", ErrDead, rec.Error)
	case errors.Is(claimErr, job.ErrNotYet):
		return &RetryError{JobID: id, After: time.Until(*rec.NextAttemptAt), Cause: rec.Error}
	case errors.Is(claimErr, job.ErrBusy):
		return fmt.Errorf("%w: %v", ErrBusy, claimErr)
	default:
		return claimErr
	}

	attemptCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); w.heartbeat(attemptCtx, cancel, id, owner) }()
	res, runErr := w.attempt(attemptCtx, rec)
	cancel()
	<-hbDone

	if ctx.Err() != nil {
		// Shutting down: the record stays "running" and the next start
		// takes it over. Recording a failure here would burn an attempt.
		return ctx.Err()
	}
	return w.record(ctx, rec, res, runErr)
}

// heartbeat renews the lease until ctx ends; if the job was taken from us
// (our lease lapsed and another worker claimed it), it cancels the attempt.
func (w *Worker) heartbeat(ctx context.Context, cancel context.CancelFunc, id, owner string) {
	t := time.NewTicker(w.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rec, err := w.store.Update(ctx, id, func(r *job.Record) error { return r.Renew(owner, w.now(), w.cfg.Lease) })
		if err == nil {
			w.changed(rec)
		}
		if errors.Is(err, job.ErrBusy) {
			w.logf("job %s: lost its claim, stopping the attempt", id)
			cancel()
			return
		}
	}
}

// record writes the attempt's outcome, if we still hold the job.
func (w *Worker) record(ctx context.Context, claimed *job.Record, res attemptResult, runErr error) error {
	now := w.now()
	owner := w.vol.ID()
	var after time.Duration
	rec, err := w.store.Update(ctx, claimed.ID, func(r *job.Record) error {
		if r.State != job.Running || r.Owner != owner || r.Attempt != claimed.Attempt {
			return fmt.Errorf("%w: the claim was lost during the attempt", ErrBusy)
		}
		r.Log = res.log
		if res.size >= 0 {
			r.Size = res.size
			r.InputSHA256 = res.sha256
		}
		r.Timings = res.timings
		if len(r.Attempts) > 0 {
			// Time from creation to the first attempt: what a retry adds is
			// backoff, not queueing.
			r.Timings.QueuedMS = r.Attempts[0].StartedAt.Sub(r.CreatedAt).Milliseconds()
		}
		if runErr == nil {
			r.Succeed(now, res.outputs)
			return nil
		}
		exit, permanent := classify(runErr)
		after = w.cfg.backoff(r.Attempt, rand.Float64())
		r.Fail(now, exit, runErr.Error(), permanent, after)
		return nil
	})
	if err != nil {
		return err
	}
	w.changed(rec)
	switch rec.State {
	case job.Succeeded:
		w.logf("job %s: succeeded in %s, %d output(s)", rec.ID, time.Duration(rec.Timings.TotalMS)*time.Millisecond, len(rec.Outputs))
		if err := os.RemoveAll(res.workDir); err != nil {
			w.logf("job %s: clean scratch: %v", rec.ID, err)
		}
		return nil
	case job.Dead:
		w.logf("job %s: dead after %d attempt(s): %s (log %s, scratch kept in %s)", rec.ID, rec.Attempt, rec.Error, rec.Log, res.workDir)
		return fmt.Errorf("%w: %s", ErrDead, rec.Error)
	default:
		w.logf("job %s: attempt %d failed: %s", rec.ID, rec.Attempt, rec.Error)
		return &RetryError{JobID: rec.ID, After: after, Cause: rec.Error}
	}
}

// classify turns an attempt's error into an exit code (when the processor
// ran) and whether retrying could help.
func classify(err error) (exit *int, permanent bool) {
	var ee *processor.ExitError
	if errors.As(err, &ee) {
		c := ee.Code
		return &c, false
	}
	return nil, errors.Is(err, processor.ErrNotFound) || errors.Is(err, errInputChanged)
}

// Retry puts a finished job back in the queue with budget more attempts.
func Retry(ctx context.Context, store *jobstore.Store, id string, budget int) (*job.Record, error) {
	return store.Update(ctx, id, func(r *job.Record) error { return r.Retry(time.Now(), budget) })
}

// safeExt returns a short, harmless extension from key for the input file's
// name on the volume (processors may look at it), or "".
func safeExt(key string) string {
	ext := filepath.Ext(key)
	if len(ext) < 2 || len(ext) > 16 {
		return ""
	}
	for _, c := range ext[1:] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return ""
		}
	}
	return ext
}

// maxKey is the longest S3 object key.
const maxKey = 1024

// OutputKey is where an output file of the job goes in the output bucket:
// <input key>/<file>, or _long/<job id>/<file> when that would exceed
// S3's 1,024-byte key limit.
func OutputKey(rec *job.Record, rel string) string {
	k := rec.Key + "/" + rel
	if len(k) <= maxKey {
		return k
	}
	return "_long/" + rec.ID + "/" + rel
}

// copyCtx copies like io.Copy but stops when ctx ends.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	return io.Copy(dst, readerCtx{ctx, src})
}

type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
