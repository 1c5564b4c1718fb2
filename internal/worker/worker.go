package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
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

// ErrBusy is returned by Run when another worker holds the job, or when
// this attempt lost its hold (its lease lapsed) and stopped.
var ErrBusy = errors.New("job is running elsewhere")

// ErrSuperseded is returned by Run for a job whose input version is no
// longer the current one (now or before): it ended without publishing,
// which is not a failure.
var ErrSuperseded = errors.New("job superseded by a newer version of its input")

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
	owner string // the volume plus this process: "<volume-id>/<nonce>"
	now   func() time.Time
	// beforePut, set by tests only, runs before each output's conditional
	// write, after the checks that allowed it.
	beforePut func(key string)
	// Logf receives one line per attempt outcome; nil is silent.
	Logf func(format string, args ...any)
	// Objects, if set, serves the worker's reads, listings, deletes and
	// single-part writes of inputs and outputs in place of the S3 client,
	// which keeps multipart uploads. The local pipeline sets it to the
	// embedded server's in-process s3server.Direct. Set it before Run.
	Objects Objects
	// OnChange, if set, is called with the record after each write of it
	// (claim, heartbeat, outcome). It must return quickly and must not keep
	// or modify the record.
	OnChange func(*job.Record)
	// LogSink, if set, receives each attempt's part of the job's log
	// when the attempt ends (before its outcome is recorded). Set it
	// before Run.
	LogSink LogSink
}

// New returns a Worker. client reaches both the input and output buckets.
func New(cfg Config, client *s3.Client, store *jobstore.Store, vol *volume.Volume, proc processor.Processor) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, s3: client, store: store, vol: vol, proc: proc, owner: vol.Owner(), now: time.Now}, nil
}

// Owner is the identity this worker claims jobs under.
func (w *Worker) Owner() string { return w.owner }

// Run does the job end to end. It returns nil when the job succeeded (now
// or earlier: a finished job is a no-op), ErrDead when it is dead,
// ErrSuperseded when a newer version of its input replaced it, ErrBusy
// when another worker holds it or this attempt lost its lease, a
// *RetryError when an attempt failed and the caller should dispatch it
// again later, or the context's error when ctx ended mid-attempt: the
// attempt is then handed back uncounted (a graceful stop is not a failure).
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
		err := w.runOnce(ctx, id, lock)
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

// Objects is the part of the S3 API a worker uses for inputs and outputs,
// besides multipart uploads.
type Objects interface {
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

func (w *Worker) objects() Objects {
	if w.Objects != nil {
		return w.Objects
	}
	return w.s3
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

// newToken returns a fresh claim token.
func newToken() string {
	var b [12]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// runOnce claims the job and runs one attempt. The caller holds the job's
// volume lock, which proves that no other process on this volume runs it:
// a record still "running" under this volume's name is a crashed attempt
// and is taken over.
func (w *Worker) runOnce(ctx context.Context, id string, lock *volume.Lock) error {
	token := newToken()
	var claimErr error
	// Record writes are not cut short by a stop: a claim written but not
	// seen, or an outcome half-recorded, would leave the job "running"
	// until its take-over counts a crash. They have a bound of their own.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer wcancel()
	rec, etag, err := w.store.UpdateFrom(wctx, id, nil, "", func(r *job.Record) error {
		before := r.State
		claimErr = r.Claim(w.owner, token, w.now(), w.cfg.Lease, true)
		if claimErr != nil && r.State == before {
			return jobstore.ErrStop
		}
		if claimErr == nil {
			r.ConfigVersion, r.ProcessorVersion = w.cfg.ConfigVersion, w.cfg.ProcessorVersion
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
	case claimErr == nil && ctx.Err() != nil:
		return w.handBack(rec, token, ctx.Err()) // stopped while claiming
	case claimErr == nil:
	case errors.Is(claimErr, job.ErrFinished):
		switch rec.State {
		case job.Succeeded:
			return nil
		case job.Superseded:
			return fmt.Errorf("%w: %s", ErrSuperseded, rec.Reason)
		}
		return fmt.Errorf("%w: %s", ErrDead, rec.Error)
	case errors.Is(claimErr, job.ErrNotYet):
		return &RetryError{JobID: id, After: time.Until(*rec.NextAttemptAt), Cause: rec.Error}
	case errors.Is(claimErr, job.ErrBusy):
		return fmt.Errorf("%w: %v", ErrBusy, claimErr)
	default:
		return claimErr
	}

	attemptCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	lease := w.startLease(attemptCtx, cancel, rec, etag)
	res, runErr := w.attempt(attemptCtx, rec, lease, lock)
	cancel(nil)
	lease.wait()

	switch {
	case ctx.Err() != nil:
		// A graceful stop: give the attempt back uncounted.
		return w.handBack(rec, token, ctx.Err())
	case lease.lost():
		w.logf("job %s: attempt %d stopped: %v; it published nothing", id, rec.Attempt, lease.cause())
		return fmt.Errorf("%w: %v", ErrBusy, lease.cause())
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer rcancel()
	last, lastETag := lease.last()
	return w.record(rctx, last, lastETag, token, res, runErr)
}

// handBack returns a job interrupted by a graceful stop to where it was
// before the attempt. It runs on a context of its own: the caller's has
// ended. If it cannot write, the job stays running and is taken over (as
// a crash) later.
func (w *Worker) handBack(rec *job.Record, token string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), handBackTimeout)
	defer cancel()
	got, err := w.store.Update(ctx, rec.ID, func(r *job.Record) error { return r.HandBack(token, w.now()) })
	if err != nil {
		w.logf("job %s: could not hand back the interrupted attempt (%v); it will be taken over", rec.ID, err)
		return cause
	}
	w.changed(got)
	w.logf("job %s: stopped; attempt handed back, not counted", rec.ID)
	return cause
}

// handBackTimeout bounds the record write of a graceful stop.
const handBackTimeout = 5 * time.Second

// logCopyTimeout bounds the copies of an attempt's log (S3, LogSink).
const logCopyTimeout = 15 * time.Second

// recordTimeout bounds a claim or an outcome write.
const recordTimeout = 30 * time.Second

// record writes the attempt's outcome, if the attempt still holds the job.
// claimed is the record as this attempt last wrote it, with its ETag: when
// nobody wrote since (the common case), the outcome is one write, no read.
func (w *Worker) record(ctx context.Context, claimed *job.Record, etag, token string, res attemptResult, runErr error) error {
	// The log first: who sees the outcome finds the whole log beside it.
	// Its copies have a bound of their own, so that a store that does not
	// answer cannot take the outcome's time (the lease runs meanwhile).
	lctx, lcancel := context.WithTimeout(context.WithoutCancel(ctx), logCopyTimeout)
	w.uploadLog(lctx, claimed, res.log)
	w.sinkLog(lctx, claimed, res.log, res.logFrom)
	lcancel()
	now := w.now()
	var after time.Duration
	var sup *supersededError
	rec, _, err := w.store.UpdateFrom(ctx, claimed.ID, claimed, etag, func(r *job.Record) error {
		if !r.Holds(token) {
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
		switch {
		case runErr == nil:
			r.Succeed(now, res.outputs)
		case errors.As(runErr, &sup):
			return r.Supersede(now, sup.reason)
		default:
			exit, permanent := classify(runErr)
			after = w.cfg.backoff(r.Attempt, rand.Float64())
			r.Fail(now, exit, runErr.Error(), permanent, after)
		}
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
	case job.Superseded:
		w.logf("job %s: superseded (%s)", rec.ID, rec.Reason)
		os.RemoveAll(res.workDir)
		return fmt.Errorf("%w: %s", ErrSuperseded, rec.Reason)
	case job.Dead:
		w.logf("job %s: dead after %d attempt(s): %s (log %s, scratch kept in %s)", rec.ID, rec.Attempt, rec.Error, rec.Log, res.workDir)
		// What sits in the output bucket describes what sits in the input
		// bucket: an older version's outputs go, if this is the current one.
		if err := w.clearStale(ctx, rec); err != nil {
			w.logf("job %s: remove outputs of older versions: %v", rec.ID, err)
		}
		return fmt.Errorf("%w: %s", ErrDead, rec.Error)
	default:
		w.logf("job %s: attempt %d failed: %s", rec.ID, rec.Attempt, rec.Error)
		return &RetryError{JobID: rec.ID, After: after, Cause: rec.Error}
	}
}

// classify turns an attempt's error into an exit code (when the processor
// ran) and whether retrying could help: not when the processor said its
// input can never succeed (processor.ExitDataErr).
func classify(err error) (exit *int, permanent bool) {
	var ee *processor.ExitError
	if errors.As(err, &ee) {
		c := ee.Code
		return &c, c == processor.ExitDataErr
	}
	return nil, errors.Is(err, processor.ErrNotFound) || errors.Is(err, job.ErrOutputName) || errors.Is(err, errStoreConflict)
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
