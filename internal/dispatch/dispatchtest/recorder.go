package dispatchtest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/conveyorhq/conveyor/internal/dispatch"
)

var _ dispatch.Dispatcher = (*Recorder)(nil)

// Recorder is a Dispatcher for the tests of its callers (the orchestrator,
// the Lambda handler): it sends nothing, records the job IDs it accepts
// and answers each with the ref "cmd-N", N counting them from 1 (Reset
// does not restart the count, so refs stay unique). Its
// fields are not guarded: set them before dispatching, or between
// dispatches. The zero value is ready to use.
type Recorder struct {
	// Driver is what Name returns; "" is "recorder".
	Driver string
	// Func, when set, is called first for each job: an error is returned
	// as is and the job is not recorded; a ref other than "" replaces
	// "cmd-N".
	Func func(jobID string) (ref string, err error)

	mu  sync.Mutex
	ids []string
	n   int // jobs accepted, Reset or not
}

// Name returns r.Driver, or "recorder".
func (r *Recorder) Name() string {
	if r.Driver == "" {
		return "recorder"
	}
	return r.Driver
}

// Dispatch records jobID, unless r.Func fails it.
func (r *Recorder) Dispatch(_ context.Context, jobID string) (string, error) {
	ref := ""
	if r.Func != nil {
		var err error
		if ref, err = r.Func(jobID); err != nil {
			return "", err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, jobID)
	r.n++
	if ref == "" {
		ref = fmt.Sprintf("cmd-%d", r.n)
	}
	return ref, nil
}

// Close does nothing.
func (r *Recorder) Close() error { return nil }

// Reset forgets the job IDs recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = nil
}

// Dispatched returns the job IDs recorded, in order.
func (r *Recorder) Dispatched() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}
