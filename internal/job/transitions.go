package job

import (
	"errors"
	"fmt"
	"time"
)

// ErrBusy is returned by Claim when another live worker holds the job.
var ErrBusy = errors.New("job is held by another worker")

// ErrFinished is returned by Claim for a job in a terminal state.
var ErrFinished = errors.New("job already finished")

// ErrNotYet is returned by Claim when a retry is not due yet.
var ErrNotYet = errors.New("retry not due yet")

// Claim makes owner the holder of the job for one attempt, until lease.
// takeOver allows taking a running job from a holder known to be gone (the
// worker proved, by locking the job on the same volume, that nobody runs it);
// without it a running job is only taken once its lease has expired.
func (r *Record) Claim(owner string, now time.Time, lease time.Duration, takeOver bool) error {
	switch r.State {
	case Succeeded, Dead:
		return fmt.Errorf("%w: %s", ErrFinished, r.State)
	case Running:
		expired := r.LeaseUntil == nil || now.After(*r.LeaseUntil)
		if !expired && !(takeOver && r.Owner == owner) {
			return fmt.Errorf("%w: %s until %s", ErrBusy, r.Owner, r.LeaseUntil.Format(time.RFC3339))
		}
		// The previous attempt died with its worker: it counts as failed.
		r.closeAttempt(now, nil, "worker stopped during the attempt")
	case Retrying:
		if r.NextAttemptAt != nil && now.Before(*r.NextAttemptAt) {
			return fmt.Errorf("%w: next attempt at %s", ErrNotYet, r.NextAttemptAt.Format(time.RFC3339))
		}
	}
	if r.MaxAttempts > 0 && r.Attempt >= r.MaxAttempts {
		r.State = Dead
		r.Error = fmt.Sprintf("gave up after %d attempts: %s", r.Attempt, r.Error)
		r.FinishedAt = ptr(now.UTC())
		r.UpdatedAt = now.UTC()
		return fmt.Errorf("%w: %s", ErrFinished, r.State)
	}
	r.State = Running
	r.Attempt++
	r.Owner = owner
	r.LeaseUntil = ptr(now.Add(lease).UTC())
	r.StartedAt = ptr(now.UTC())
	r.FinishedAt = nil
	r.NextAttemptAt = nil
	r.ExitCode = nil
	r.Error = ""
	r.UpdatedAt = now.UTC()
	r.Attempts = append(r.Attempts, Attempt{Number: r.Attempt, Owner: owner, StartedAt: now.UTC()})
	return nil
}

// Renew extends the lease of the owner's running attempt.
func (r *Record) Renew(owner string, now time.Time, lease time.Duration) error {
	if r.State != Running || r.Owner != owner {
		return fmt.Errorf("%w: state %s, owner %q", ErrBusy, r.State, r.Owner)
	}
	r.LeaseUntil = ptr(now.Add(lease).UTC())
	r.UpdatedAt = now.UTC()
	return nil
}

// Succeed records a successful attempt.
func (r *Record) Succeed(now time.Time, outputs []Output) {
	r.State = Succeeded
	r.Outputs = outputs
	r.OutputBytes = 0
	for _, o := range outputs {
		r.OutputBytes += o.Size
	}
	zero := 0
	r.ExitCode = &zero
	r.Error = ""
	r.finish(now)
	r.closeAttempt(now, &zero, "")
}

// Fail records a failed attempt. A permanent failure, or one that used the
// last attempt, makes the job Dead; otherwise it is Retrying after backoff.
func (r *Record) Fail(now time.Time, exitCode *int, cause string, permanent bool, backoff time.Duration) {
	r.ExitCode = exitCode
	r.Error = cause
	r.closeAttempt(now, exitCode, cause)
	if permanent || (r.MaxAttempts > 0 && r.Attempt >= r.MaxAttempts) {
		r.State = Dead
		r.finish(now)
		return
	}
	r.State = Retrying
	r.NextAttemptAt = ptr(now.Add(backoff).UTC())
	r.Owner = ""
	r.LeaseUntil = nil
	r.UpdatedAt = now.UTC()
}

// Retry puts a dead or succeeded job back in the queue with budget more
// attempts (an operator's decision).
func (r *Record) Retry(now time.Time, budget int) error {
	if !r.State.Terminal() {
		return fmt.Errorf("job %s is %s, not finished: nothing to retry", r.ID, r.State)
	}
	r.State = Queued
	r.MaxAttempts = r.Attempt + max(budget, 1)
	r.Error = ""
	r.ExitCode = nil
	r.FinishedAt = nil
	r.NextAttemptAt = nil
	r.UpdatedAt = now.UTC()
	return nil
}

func (r *Record) finish(now time.Time) {
	r.FinishedAt = ptr(now.UTC())
	r.NextAttemptAt = nil
	r.LeaseUntil = nil
	r.UpdatedAt = now.UTC()
}

func (r *Record) closeAttempt(now time.Time, exitCode *int, cause string) {
	if n := len(r.Attempts); n > 0 && r.Attempts[n-1].FinishedAt.IsZero() {
		a := &r.Attempts[n-1]
		a.FinishedAt = now.UTC()
		a.ExitCode = exitCode
		a.Error = cause
	}
}

func ptr[T any](v T) *T { return &v }
