package jobevents

import (
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// What every event says about itself.
const (
	// DefaultSource is the events' source, for a rule's pattern.
	DefaultSource = "conveyor"
	// DetailType is the events' detail-type.
	DetailType = "Conveyor Job State Change"
	// MaxOutputs is how many outputs an event lists at most: EventBridge
	// refuses entries over 256 KiB. OutputCount always has the number.
	MaxOutputs = 100
)

// Detail is one event's payload: the job as its record says after the
// change. docs/events/job-state-change.schema.json describes it; change
// both together.
type Detail struct {
	JobID     string `json:"jobId"`
	State     string `json:"state"`
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	VersionID string `json:"versionId,omitempty"`
	ETag      string `json:"etag,omitempty"`
	Size      int64  `json:"size"`

	Attempt     int `json:"attempt"`
	MaxAttempts int `json:"maxAttempts"`

	// OutputBucket is where Outputs are, when the publisher knows it.
	OutputBucket     string   `json:"outputBucket,omitempty"`
	Outputs          []Output `json:"outputs,omitempty"`
	OutputCount      int      `json:"outputCount"`
	OutputsTruncated bool     `json:"outputsTruncated,omitempty"`

	ExitCode *int   `json:"exitCode,omitempty"`
	Error    string `json:"error,omitempty"`
	Reason   string `json:"reason,omitempty"`

	CreatedAt     time.Time  `json:"createdAt"`
	UpdatedAt     time.Time  `json:"updatedAt"`
	StartedAt     *time.Time `json:"startedAt,omitempty"`
	FinishedAt    *time.Time `json:"finishedAt,omitempty"`
	NextAttemptAt *time.Time `json:"nextAttemptAt,omitempty"`
}

// Output is one file the job published.
type Output struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
}

// DetailOf returns the event detail of r; outputBucket may be "".
func DetailOf(r *job.Record, outputBucket string) Detail {
	d := Detail{
		JobID: r.ID, State: string(r.State), Bucket: r.Bucket, Key: r.Key,
		VersionID: r.VersionID, ETag: r.ETag, Size: r.Size,
		Attempt: r.Attempt, MaxAttempts: r.MaxAttempts,
		OutputCount: len(r.Outputs),
		ExitCode:    r.ExitCode, Error: r.Error, Reason: r.Reason,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, NextAttemptAt: r.NextAttemptAt,
	}
	if len(r.Outputs) > 0 {
		d.OutputBucket = outputBucket
	}
	for i, o := range r.Outputs {
		if i == MaxOutputs {
			d.OutputsTruncated = true
			break
		}
		d.Outputs = append(d.Outputs, Output{Key: o.Key, Size: o.Size, SHA256: o.SHA256})
	}
	return d
}
