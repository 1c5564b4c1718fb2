package main

import (
	"fmt"
	"math"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
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
// The benchmark writes every object of a record itself, through the S3 API;
// it does not rely on Conveyor to maintain the index.

// recordKey is the record's object key.
func recordKey(id string) string { return "jobs/" + id + ".json" }

// finishedTag is the tagging (URL query form) of a finished record's object.
const finishedTag = "conveyor-finished=true"

// markerKey is the key of the empty object that indexes rec.
func markerKey(rec *job.Record) string {
	if !rec.State.Terminal() {
		return "active/" + rec.ID
	}
	return fmt.Sprintf("done/%s/%019d-%s", rec.State, math.MaxInt64-finishedAt(rec).UnixNano(), rec.ID)
}

// finishedAt is when a finished record finished (its update time when the
// field is missing, which a finished record should not have).
func finishedAt(rec *job.Record) time.Time {
	if rec.FinishedAt != nil {
		return *rec.FinishedAt
	}
	return rec.UpdatedAt
}
