package jobmetrics

import (
	"fmt"
	"io"
	"time"

	"github.com/conveyorhq/conveyor/internal/emf"
	"github.com/conveyorhq/conveyor/internal/job"
)

// Namespace and dimension of the job metrics.
const (
	Namespace      = "Conveyor"
	DimStateBucket = "StateBucket"
)

// The job metrics.
const (
	JobsCreated    = "JobsCreated"    // Count: a job record created (queued)
	JobsSucceeded  = "JobsSucceeded"  // Count: a job ended succeeded
	JobsDead       = "JobsDead"       // Count: a job ended dead (attempts used up, permanent error, never delivered)
	JobsSuperseded = "JobsSuperseded" // Count: a job ended superseded
	// AttemptDuration is how long an attempt ran, claim to outcome.
	AttemptDuration = "AttemptDuration" // Milliseconds
	// QueueAge is how long a new job waited for its first claim.
	QueueAge = "QueueAge" // Milliseconds
	// Backlog is how many unfinished jobs a reconcile pass read.
	Backlog = "Backlog" // Count
	// OldestUnfinishedAge is the age of the oldest unfinished job a pass read.
	OldestUnfinishedAge = "OldestUnfinishedAge" // Milliseconds
	// DispatchFailed counts dispatches that failed (the job is recorded;
	// the orchestrator's retry or the reconciler sends it again).
	DispatchFailed = "DispatchFailed" // Count
	// EventsFailed counts job events that were not published.
	EventsFailed = "EventsFailed" // Count
)

// Writer writes job metrics to an io.Writer, one EMF line per Write, each
// line in one Write call so that concurrent writers keep lines whole. It
// is safe for concurrent use. It is an Observer; Changed feeds it through
// its own Tracker.
type Writer struct {
	out         io.Writer
	stateBucket string
	now         func() time.Time
	tracker     *Tracker
}

// New returns a Writer of lines to out, for the stack whose state bucket
// is stateBucket.
func New(out io.Writer, stateBucket string) *Writer {
	w := &Writer{out: out, stateBucket: stateBucket, now: time.Now}
	w.tracker = NewTracker(w)
	return w
}

var _ Observer = (*Writer)(nil)

// Write writes one line with metrics and log fields.
func (w *Writer) Write(metrics []emf.Metric, fields map[string]any) error {
	if w == nil || len(metrics) == 0 {
		return nil
	}
	if fields == nil {
		fields = map[string]any{}
	}
	if _, ok := fields["msg"]; !ok {
		fields["msg"] = "metrics"
	}
	b, err := emf.Line{
		Namespace:     Namespace,
		DimensionSets: [][]string{{DimStateBucket}},
		Dimensions:    map[string]string{DimStateBucket: w.stateBucket},
		Metrics:       metrics,
		Fields:        fields,
	}.Marshal(w.now())
	if err != nil {
		return err
	}
	_, err = w.out.Write(append(b, '\n'))
	return err
}

// Changed writes the metrics of one record change, if it is one: a new
// job (JobsCreated), a first claim (QueueAge), the end of an attempt this
// Writer saw start (AttemptDuration), a terminal state (Jobs<State>). A
// write of the same state and attempt (a heartbeat) writes nothing. A nil
// Writer does nothing.
func (w *Writer) Changed(r *job.Record) {
	if w == nil {
		return
	}
	w.tracker.Changed(r)
}

// Observe writes the line of one observation (see Changed).
func (w *Writer) Observe(o Observation) {
	var ms []emf.Metric
	ms1 := func(name string) { ms = append(ms, emf.Metric{Name: name, Unit: emf.Count, Value: 1}) }
	if o.Created {
		ms1(JobsCreated)
	}
	if o.HasQueueWait {
		ms = append(ms, emf.Metric{Name: QueueAge, Unit: emf.Milliseconds, Value: ms64(o.QueueWait)})
	}
	if o.AttemptEnded {
		ms = append(ms, emf.Metric{Name: AttemptDuration, Unit: emf.Milliseconds, Value: ms64(o.AttemptDuration)})
	}
	switch o.State {
	case job.Succeeded:
		ms1(JobsSucceeded)
	case job.Dead:
		ms1(JobsDead)
	case job.Superseded:
		ms1(JobsSuperseded)
	}
	if err := w.Write(ms, map[string]any{"msg": "job " + string(o.State), "jobId": o.JobID, "state": string(o.State), "attempt": o.Attempt}); err != nil {
		fmt.Fprintf(w.out, "job metrics: %v\n", err)
	}
}

func ms64(d time.Duration) float64 { return float64(d.Milliseconds()) }
