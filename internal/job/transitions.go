package job

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrBusy is returned by Claim when another live worker holds the job.
var ErrBusy = errors.New("job is held by another worker")

// ErrFinished is returned by Claim for a job in a terminal state.
var ErrFinished = errors.New("job already finished")

// ErrNotYet is returned by Claim when a retry is not due yet.
var ErrNotYet = errors.New("retry not due yet")

// CrashCause is the error recorded for an attempt whose worker died with
// it (kill -9, OOM, a lost machine): it counts as a failed attempt.
const CrashCause = "worker stopped unexpectedly"

// ErrLost is returned by the holder's transitions when the job is no
// longer held with the given token (the lease lapsed and another attempt
// claimed it, or the job ended).
var ErrLost = errors.New("the attempt no longer holds the job")

// VolumeOf returns the volume part of an owner ("<volume-id>/<nonce>").
func VolumeOf(owner string) string {
	v, _, _ := strings.Cut(owner, "/")
	return v
}

// Claim makes owner the holder of the job for one attempt, until lease,
// with token as the proof every later write of this attempt presents.
// takeOver allows taking a running job whose holder is known to be gone:
// the caller runs on the holder's volume and holds the job's lock there,
// which the holder would hold if it were alive. Without it a running job
// is only taken once its lease has expired. Either way the previous
// attempt died with its worker and counts as failed.
func (r *Record) Claim(owner, token string, now time.Time, lease time.Duration, takeOver bool) error {
	switch r.State {
	case Succeeded, Dead, Superseded:
		return fmt.Errorf("%w: %s", ErrFinished, r.State)
	case Running:
		expired := r.LeaseUntil == nil || now.After(*r.LeaseUntil)
		sameVolume := VolumeOf(r.Owner) == VolumeOf(owner)
		if !expired && !(takeOver && sameVolume) {
			return fmt.Errorf("%w: %s until %s", ErrBusy, r.Owner, r.LeaseUntil.Format(time.RFC3339))
		}
		cause := CrashCause + " (its lease lapsed)"
		if !expired {
			cause = CrashCause + " (found by its volume's job lock)"
		}
		r.closeAttempt(now, nil, cause)
		r.Error = cause
	case Retrying:
		if r.NextAttemptAt != nil && now.Before(*r.NextAttemptAt) {
			return fmt.Errorf("%w: next attempt at %s", ErrNotYet, r.NextAttemptAt.Format(time.RFC3339))
		}
	}
	if r.MaxAttempts > 0 && r.Attempt >= r.MaxAttempts {
		r.State = Dead
		r.Error = fmt.Sprintf("gave up after %d attempts: %s", r.Attempt, r.Error)
		r.Owner, r.Token = "", ""
		r.finish(now)
		return fmt.Errorf("%w: %s", ErrFinished, r.State)
	}
	r.State = Running
	r.Attempt++
	r.Dispatches = 0 // delivered
	r.Owner = owner
	r.Token = token
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

// Dispatched records one more delivery of the job to its dispatcher.
func (r *Record) Dispatched(now time.Time, ref string) {
	r.DispatchedAt = ptr(now.UTC())
	r.Dispatches++
	if ref != "" {
		r.CommandID = ref
	}
	r.UpdatedAt = now.UTC()
}

// Held takes back the dispatch counted for a job that was not sent after
// all (every worker's slots were taken): it stays queued, and the
// reconciler sends it at its next pass instead of waiting as for a
// command on its way.
func (r *Record) Held(now time.Time) {
	r.DispatchedAt = nil
	if r.Dispatches > 0 {
		r.Dispatches--
	}
	r.UpdatedAt = now.UTC()
}

// Undelivered ends a job that was dispatched n times without any worker
// claiming it (the command failed before the claim: the agent or the
// binary is missing, delivery timed out): retrying the same way cannot
// help, so it is dead with that cause.
func (r *Record) Undelivered(now time.Time) error {
	if r.State.Terminal() || r.State == Running {
		return fmt.Errorf("%w: %s", ErrFinished, r.State)
	}
	r.Error = fmt.Sprintf("dispatched %d times and never claimed by a worker (last command %q): check that the worker is running, its agent reaches the service, and the conveyor binary is installed", r.Dispatches, r.CommandID)
	r.ExitCode = nil
	r.State = Dead
	r.Owner, r.Token = "", ""
	r.finish(now)
	return nil
}

// Holds reports whether the attempt with token still holds the job.
func (r *Record) Holds(token string) bool {
	return r.State == Running && token != "" && r.Token == token
}

// Renew extends the lease of the attempt holding token.
func (r *Record) Renew(token string, now time.Time, lease time.Duration) error {
	if !r.Holds(token) {
		return fmt.Errorf("%w: state %s, owner %q", ErrLost, r.State, r.Owner)
	}
	r.LeaseUntil = ptr(now.Add(lease).UTC())
	r.UpdatedAt = now.UTC()
	return nil
}

// HandBack returns the job held by token to where it was before the
// attempt (queued, or retrying and due now), without counting the
// attempt: a graceful stop of the worker is not a failure of the job.
func (r *Record) HandBack(token string, now time.Time) error {
	if !r.Holds(token) {
		return fmt.Errorf("%w: state %s, owner %q", ErrLost, r.State, r.Owner)
	}
	if n := len(r.Attempts); n > 0 && r.Attempts[n-1].Number == r.Attempt {
		r.Attempts = r.Attempts[:n-1]
	}
	r.Attempt--
	r.Handbacks++
	r.Owner, r.Token, r.LeaseUntil, r.StartedAt = "", "", nil, nil
	// Due at once: not a command on its way, whatever was sent before.
	r.DispatchedAt = nil
	r.State = Queued
	r.Error, r.ExitCode = "", nil
	if n := len(r.Attempts); n > 0 {
		prev := r.Attempts[n-1]
		r.State = Retrying
		r.NextAttemptAt = ptr(now.UTC())
		r.Error, r.ExitCode = prev.Error, prev.ExitCode
		r.StartedAt = ptr(prev.StartedAt)
	}
	r.UpdatedAt = now.UTC()
	return nil
}

// Supersede ends a job whose input version is no longer current and that
// has not published: reason says what replaced it. It is not a failure.
// Any unfinished job can be superseded; the caller checks that it holds
// the job when an attempt is running.
func (r *Record) Supersede(now time.Time, reason string) error {
	if r.State.Terminal() {
		return fmt.Errorf("%w: %s", ErrFinished, r.State)
	}
	r.closeAttempt(now, nil, "superseded: "+reason)
	r.State = Superseded
	r.Reason = reason
	r.Owner, r.Token = "", ""
	r.finish(now)
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
	r.Owner, r.Token = "", ""
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
		r.Owner, r.Token = "", ""
		r.finish(now)
		return
	}
	r.State = Retrying
	r.NextAttemptAt = ptr(now.Add(backoff).UTC())
	r.Owner, r.Token = "", ""
	r.LeaseUntil = nil
	r.UpdatedAt = now.UTC()
}

// Retry puts a dead or succeeded job back in the queue with budget more
// attempts (an operator's decision). A superseded job is not retried: its
// input is no longer current.
func (r *Record) Retry(now time.Time, budget int) error {
	if !r.State.Terminal() {
		return fmt.Errorf("job %s is %s, not finished: nothing to retry", r.ID, r.State)
	}
	if r.State == Superseded {
		return fmt.Errorf("job %s was superseded (%s): a newer version of its input has its own job", r.ID, r.Reason)
	}
	r.State = Queued
	r.MaxAttempts = r.Attempt + max(budget, 1)
	r.Error = ""
	r.ExitCode = nil
	r.FinishedAt = nil
	r.NextAttemptAt = nil
	r.Owner, r.Token = "", ""
	// Delivery starts afresh: a job that ended dead because its commands
	// never reached a worker must not end so again at once, and the next
	// reconcile pass sends it.
	r.Dispatches, r.DispatchedAt = 0, nil
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
