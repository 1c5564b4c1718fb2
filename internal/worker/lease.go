package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// errLeaseLost is the cause an attempt is cancelled with when it can no
// longer prove that it holds the job.
var errLeaseLost = errors.New("lease lost")

// lease keeps an attempt's claim alive. It renews every Lease/6 by a
// compare-and-swap that presents the claim token. The attempt fences
// itself: when the record says another attempt holds the job, or when no
// renewal has succeeded for two thirds of the lease (the store unreachable,
// the process stalled), it cancels the attempt, whose processor group is
// then killed and which publishes nothing. Two thirds leave a third of the
// lease for the cancellation to land before anyone else may claim the job.
//
// Time here is measured on the monotonic clock, so a wall clock that jumps
// neither expires the lease early nor keeps it alive.
type lease struct {
	w      *Worker
	id     string
	token  string
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu        sync.Mutex
	renewedAt time.Time // monotonic: last successful claim or renewal
	err       error     // why the attempt was fenced off, nil while held
	rec       *job.Record
	etag      string // of rec, as last written by this attempt
}

// startLease starts renewing rec's lease until ctx ends.
func (w *Worker) startLease(ctx context.Context, cancel context.CancelCauseFunc, rec *job.Record, etag string) *lease {
	l := &lease{w: w, id: rec.ID, token: rec.Token, cancel: cancel, done: make(chan struct{}), renewedAt: time.Now(), rec: rec, etag: etag}
	go l.run(ctx)
	return l
}

func (l *lease) run(ctx context.Context) {
	defer close(l.done)
	lease := l.w.cfg.Lease
	t := time.NewTicker(lease / 6)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Each renewal gets only what is left of the two-thirds budget.
		l.mu.Lock()
		deadline := l.renewedAt.Add(lease * 2 / 3)
		l.mu.Unlock()
		rctx, cancel := context.WithDeadline(ctx, deadline)
		l.mu.Lock()
		known, knownETag := l.rec, l.etag
		l.mu.Unlock()
		rec, etag, err := l.w.store.UpdateFrom(rctx, l.id, known, knownETag, func(r *job.Record) error { return r.Renew(l.token, l.w.now(), lease) })
		cancel()
		switch {
		case err == nil:
			l.mu.Lock()
			l.renewedAt = time.Now()
			l.rec, l.etag = rec, etag
			l.mu.Unlock()
			l.w.changed(rec)
		case errors.Is(err, job.ErrLost):
			l.fence(fmt.Errorf("%w: %v", errLeaseLost, err))
			return
		case ctx.Err() != nil:
			return
		case !time.Now().Before(deadline):
			l.fence(fmt.Errorf("%w: could not renew it for %s (%v)", errLeaseLost, lease*2/3, err))
			return
		}
	}
}

// fence cancels the attempt: it no longer holds the job.
func (l *lease) fence(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
	l.cancel(err)
}

// held returns nil while the attempt holds the job, else why not. The
// publisher asks before each step.
func (l *lease) held() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if time.Since(l.renewedAt) >= l.w.cfg.Lease*2/3 {
		return fmt.Errorf("%w: not renewed for %s", errLeaseLost, l.w.cfg.Lease*2/3)
	}
	return nil
}

// last returns the record as this attempt last wrote it, and its ETag.
func (l *lease) last() (*job.Record, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec, l.etag
}

func (l *lease) lost() bool   { return l.cause() != nil }
func (l *lease) cause() error { l.mu.Lock(); defer l.mu.Unlock(); return l.err }
func (l *lease) wait()        { <-l.done }
