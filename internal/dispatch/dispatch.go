package dispatch

import (
	"context"
	"errors"
	"fmt"
)

// Dispatcher delivers job IDs to workers.
type Dispatcher interface {
	// Name identifies the driver in job records: "local", "ssm".
	Name() string
	// Dispatch hands the job to a worker and returns a reference to the
	// delivery (an SSM command ID), or "" when the driver has none. It
	// returns ErrInvalidJobID for a malformed ID (nothing is sent),
	// ErrClosed after Close, ErrUnavailable when no worker can take it now
	// (the caller may retry later), ErrFull (which is also ErrUnavailable)
	// when workers are up but every one of their job slots is taken. Dispatching a job that is already
	// queued or running is not an error: drivers may coalesce it, and the
	// worker's claim on the record makes a second delivery harmless.
	Dispatch(ctx context.Context, jobID string) (ref string, err error)
	// Close stops accepting jobs and releases resources. Jobs already
	// delivered are not cancelled by Close.
	Close() error
}

// Sentinel errors of Dispatch.
var (
	ErrInvalidJobID = errors.New("dispatch: invalid job ID")
	ErrClosed       = errors.New("dispatch: dispatcher closed")
	ErrUnavailable  = errors.New("dispatch: no worker available")
	// ErrFull says every worker that is up has all its job slots taken:
	// nothing was sent and the job stays queued until a slot frees up.
	// errors.Is(ErrFull, ErrUnavailable) holds, for callers that only
	// know "not now".
	ErrFull = fmt.Errorf("%w: every job slot is taken", ErrUnavailable)
)
