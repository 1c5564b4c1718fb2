package jobmetrics

import (
	"sync"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Observation is what one record change means for the job metrics. It
// is computed once, by a Tracker, and handed to every Observer (EMF
// lines on AWS, Prometheus in `conveyor up`), so the two cannot disagree
// on what a job did. JobID and Key are for logs only: an Observer must
// not make them a metric label or dimension.
type Observation struct {
	JobID string
	// State is the record's state after the change; Attempt the attempts
	// started so far.
	State   job.State
	Attempt int
	// Created: a new job record (queued, no attempt yet).
	Created bool
	// Seen: this Tracker had seen the job unfinished before this change
	// (so a terminal State ends a job it counted as unfinished).
	Seen bool
	// Claimed: an attempt started (the record went running with a new
	// attempt); Retry: that attempt follows a failed one (Attempt > 1).
	Claimed, Retry bool
	// QueueWait is how long a new job waited for its first claim, set on
	// that claim only (HasQueueWait).
	QueueWait    time.Duration
	HasQueueWait bool
	// AttemptEnded: an attempt this Tracker saw claimed ended; Attempt*
	// and Phases describe it.
	AttemptEnded    bool
	AttemptDuration time.Duration
	// Phases are the ended attempt's fetch, process and upload times, from
	// the record (zero when the attempt did not reach a phase, or took
	// under a millisecond in it).
	Phases job.Timings
	// BytesIn and BytesOut are the input's and the outputs' sizes of a job
	// that succeeded (zero otherwise).
	BytesIn, BytesOut int64
}

// Observer receives the observations of record changes. Observe must
// return quickly and must not keep o beyond the call's end.
type Observer interface {
	Observe(o Observation)
}

// Tracker turns record writes (a worker's or an orchestrator's OnChange)
// into Observations for its observers. It remembers the state and attempt
// last seen of each unfinished job, so that a heartbeat (the same state
// and attempt written again) is no change and the end of an attempt is
// measured only when its start was seen. It is safe for concurrent use.
type Tracker struct {
	observers []Observer

	mu   sync.Mutex
	last map[string]job.Record // job ID -> the state/attempt last seen, while unfinished
}

// NewTracker returns a Tracker feeding obs, in order; nil entries are
// skipped.
func NewTracker(obs ...Observer) *Tracker {
	t := &Tracker{last: map[string]job.Record{}}
	for _, o := range obs {
		if o != nil {
			t.observers = append(t.observers, o)
		}
	}
	return t
}

// Changed observes one record change, if it is one. A nil Tracker or
// record does nothing.
func (t *Tracker) Changed(r *job.Record) {
	if t == nil || r == nil {
		return
	}
	o, ok := t.observe(r)
	if !ok {
		return
	}
	for _, ob := range t.observers {
		ob.Observe(o)
	}
}

func (t *Tracker) observe(r *job.Record) (Observation, bool) {
	t.mu.Lock()
	prev, seen := t.last[r.ID]
	if seen && prev.State == r.State && prev.Attempt == r.Attempt {
		t.mu.Unlock()
		return Observation{}, false
	}
	if r.State.Terminal() {
		delete(t.last, r.ID) // nothing follows: the map stays the size of the work in flight
	} else {
		t.last[r.ID] = job.Record{State: r.State, Attempt: r.Attempt}
	}
	t.mu.Unlock()

	o := Observation{JobID: r.ID, State: r.State, Attempt: r.Attempt, Seen: seen}
	switch {
	case r.State == job.Queued && r.Attempt == 0 && !seen:
		o.Created = true
	case r.State == job.Running && (!seen || prev.Attempt != r.Attempt):
		o.Claimed, o.Retry = true, r.Attempt > 1
		if r.Attempt == 1 && r.StartedAt != nil {
			o.QueueWait, o.HasQueueWait = r.StartedAt.Sub(r.CreatedAt), true
		}
	}
	if seen && prev.State == job.Running && r.State != job.Running && len(r.Attempts) > 0 {
		// Only an attempt this Tracker saw claimed: a job that ends dead at
		// its claim (attempts used up) ran no attempt now.
		if a := r.Attempts[len(r.Attempts)-1]; a.Number == prev.Attempt && !a.FinishedAt.IsZero() {
			o.AttemptEnded = true
			o.AttemptDuration = a.FinishedAt.Sub(a.StartedAt)
			o.Phases = r.Timings
		}
	}
	if r.State == job.Succeeded {
		o.BytesIn, o.BytesOut = r.Size, r.OutputBytes
	}
	return o, true
}
