package cli

import (
	"context"
	"errors"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

// DefaultPullFor bounds how long one `worker run` goes on with held jobs
// after its own: well inside the SSM command's execution timeout.
const DefaultPullFor = 20 * time.Minute

// pullReadLimit bounds the records one look for a held job reads.
const pullReadLimit = 200

// errPullDone stops the listing of active markers.
var errPullDone = errors.New("found")

// nextHeld returns a job waiting for a free slot, or "" when there is
// none: queued and due (no dispatch on its way: every worker was full when
// it was sent, or its last worker handed it back), in job ID order
// among the first pullReadLimit unfinished jobs. A worker whose slot just
// freed up takes it, rather than leaving it to the reconciler's next pass;
// its claim is a compare-and-swap, so a job also sent elsewhere meanwhile
// runs once.
func nextHeld(ctx context.Context, store *jobstore.Store, skip map[string]bool) (string, error) {
	var found string
	read := 0
	err := store.Active(ctx, "", func(e jobstore.ActiveEntry) error {
		if skip[e.ID] {
			return nil
		}
		if read++; read > pullReadLimit {
			return errPullDone
		}
		rec, _, err := store.Get(ctx, e.ID)
		if errors.Is(err, jobstore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if rec.State == job.Queued && rec.DispatchedAt == nil {
			found = rec.ID
			return errPullDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errPullDone) {
		return "", err
	}
	return found, nil
}
