package main

import (
	"fmt"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// The state bucket layout the benchmark writes, all in this file so that it
// is one edit to follow the index's final layout:
//
//	jobs/<id>.json                the record; a finished one (succeeded,
//	                              dead, superseded) carries the object tag
//	                              conveyor-finished=true
//	active/<id>                   empty; one per unfinished record
//	                              (queued, running, retrying)
//	done/<state>/<inv>-<id>       empty; one per finished record, inv being
//	                              math.MaxInt64 - finished_at in Unix
//	                              nanoseconds on 19 digits, so that a listing
//	                              is newest first
//
// The benchmark writes every object of a record itself, through the S3 API,
// with the key helpers of internal/jobstore; it does not rely on Conveyor
// to maintain the index. It also writes the reconciler's state (sweptState).

// recordKey is the record's object key.
func recordKey(id string) string { return jobstore.Key(id) }

// finishedTag is the tagging (URL query form) of a finished record's object.
const finishedTag = jobstore.FinishedTag

// markerKey is the key of the empty object that indexes rec.
func markerKey(rec *job.Record) string {
	if !rec.State.Terminal() {
		return jobstore.ActiveKey(rec.ID)
	}
	return jobstore.DoneKey(rec.State, finishedAt(rec), rec.ID)
}

// finishedAt is when a finished record finished (its update time when the
// field is missing, which a finished record should not have).
func finishedAt(rec *job.Record) time.Time {
	if rec.FinishedAt != nil {
		return *rec.FinishedAt
	}
	return rec.UpdatedAt
}

// sweptState is the reconciler state of `conveyor up` (dispatcher
// "local") as a deployment that has been running leaves it: the index
// built, and a sweep of the input bucket completed at the given time. The
// history is then measured in its steady state; without it, the first
// pass would sweep every input version once (see the README).
func sweptState(at time.Time) (string, []byte) {
	return orchestrator.StatePrefix + "local.json",
		[]byte(fmt.Sprintf(`{"indexed": true, "sweep": {"last_completed": %q}}`, at.UTC().Format(time.RFC3339Nano)))
}
