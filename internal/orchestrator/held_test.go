package orchestrator_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// A job that finds every worker's slots taken is recorded, queued and not
// an error; its dispatch is not counted, so the reconciler's next pass
// sends it (not RedispatchAfter later), and a pass that finds the slots
// still taken reports it held, not failed.
func TestFullFleetHoldsTheJob(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	var full atomic.Bool
	full.Store(true)
	b.disp.Func = func(string) (string, error) {
		if full.Load() {
			return "", fmt.Errorf("ssm: %w", dispatch.ErrFull)
		}
		return "", nil
	}
	ctx := context.Background()
	res, err := o.HandleEvent(ctx, put(t, b, "held.txt", "x"))
	if err != nil || len(res) != 1 || !res[0].Held || res[0].Outcome != orchestrator.Created {
		t.Fatalf("HandleEvent = %+v, %v; want one created job, held, no error", res, err)
	}
	rec, _, err := b.store.Get(ctx, res[0].JobID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != job.Queued || rec.DispatchedAt != nil || rec.Dispatches != 0 {
		t.Errorf("held record: state %s, dispatched at %v, %d dispatches; want queued, never dispatched", rec.State, rec.DispatchedAt, rec.Dispatches)
	}

	r := orchestrator.NewReconciler(o, time.Hour)
	rep := r.Reconcile(ctx)
	if rep.Held != 1 || len(rep.Errors) != 0 || rep.Unfinished != 0 {
		t.Errorf("pass with the fleet full: %+v, want 1 held, no error", rep)
	}
	full.Store(false)
	rep = r.Reconcile(ctx)
	if rep.Unfinished != 1 || rep.Held != 0 {
		t.Errorf("pass with a free slot: %+v, want the held job sent", rep)
	}
	if ids := b.disp.Dispatched(); len(ids) != 1 || ids[0] != res[0].JobID {
		t.Errorf("dispatched %v, want the held job once", ids)
	}
}
