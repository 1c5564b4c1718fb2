package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// DefaultReconcileInterval is how often Start reconciles.
const DefaultReconcileInterval = 30 * time.Second

// Report is what one reconciliation did.
type Report struct {
	Objects      int // input objects seen
	Missing      int // objects that had no job: submitted
	Unfinished   int // unfinished jobs not in hand, dispatched again
	Superseded   int // older versions that never had a job: recorded superseded
	Errors       []error
	Duration     time.Duration
	FinishedJobs int // records known finished (not re-read)
}

// Reconciler finds what events missed. It remembers which jobs are
// finished, so a periodic pass reads only the records that may still change.
type Reconciler struct {
	o        *Orchestrator
	Interval time.Duration
	// OnReport, if set, receives every report (for logs and tests).
	OnReport func(Report)
	// ResumeLiveLeases dispatches running jobs again even while their lease
	// is live. Right where every worker shares one volume (conveyor up): the
	// volume's job lock, not the lease, tells whether an attempt is alive,
	// so a crashed one is resumed at once instead of after its lease.
	ResumeLiveLeases bool
	// Versioned lists the input bucket's versions, for a bucket with
	// versioning on, where jobs are keyed on version IDs (Amazon S3 in the
	// AWS stack).
	Versioned bool
	// InHand, if set, reports jobs the dispatcher already holds (queued or
	// running in this process): their records are not read again.
	InHand func(id string) bool

	mu       sync.Mutex
	finished map[string]bool // finished, or dispatched by another orchestrator
	stop     context.CancelFunc
	done     chan struct{}
}

// NewReconciler returns a reconciler for o.
func NewReconciler(o *Orchestrator, interval time.Duration) *Reconciler {
	if interval <= 0 {
		interval = DefaultReconcileInterval
	}
	return &Reconciler{o: o, Interval: interval, finished: map[string]bool{}}
}

// Reconcile runs one pass: every input object without a job record is
// submitted, and every unfinished job is dispatched again (dispatchers
// coalesce a job already in hand, and the worker's conditional claim makes
// a second delivery harmless).
func (r *Reconciler) Reconcile(ctx context.Context) Report {
	start := time.Now()
	var rep Report
	known := map[string]bool{}
	err := r.o.store.IDs(ctx, func(id string) error { known[id] = true; return nil })
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return rep
	}
	cfg := r.o.cfg
	err = r.inputObjects(ctx, func(oc s3event.ObjectCreated, latest bool) {
		if !r.o.Match(cfg.InputBucket, oc.Key) {
			return
		}
		id := job.ID(cfg.InputBucket, oc.Key, job.Revision(oc.VersionID, oc.ETag))
		if _, ok := known[id]; ok {
			if latest {
				rep.Objects++
			}
			return
		}
		if !latest {
			// An older version whose event was lost (a crash between the
			// upload and its event): every version ends in one terminal
			// record, and this one can only be superseded.
			if err := r.o.RecordSuperseded(ctx, oc); err != nil {
				rep.Errors = append(rep.Errors, err)
			} else {
				rep.Superseded++
			}
			return
		}
		rep.Objects++
		rep.Missing++
		res := r.o.Submit(ctx, oc)
		if res.Err != nil {
			rep.Errors = append(rep.Errors, res.Err)
		}
		known[res.JobID] = false // just submitted: no need to re-dispatch below
	})
	if err != nil {
		rep.Errors = append(rep.Errors, err)
	}
	for id, existed := range known {
		if !existed || r.isFinished(id) || (r.InHand != nil && r.InHand(id)) {
			continue
		}
		rec, _, err := r.o.store.Get(ctx, id)
		if errors.Is(err, jobstore.ErrNotFound) {
			continue
		}
		if err != nil {
			rep.Errors = append(rep.Errors, err)
			continue
		}
		if rec.State.Terminal() {
			r.setFinished(id)
			continue
		}
		if rec.Dispatcher != "" && rec.Dispatcher != r.o.dispatcher.Name() {
			// Another orchestrator's job (a Lambda sharing the state
			// bucket): its own retries and reconciler look after it.
			r.setFinished(id)
			continue
		}
		if rec.State == job.Running && !r.ResumeLiveLeases && rec.LeaseUntil != nil && time.Now().Before(*rec.LeaseUntil) {
			continue // a worker holds it and is alive
		}
		rep.Unfinished++
		if err := r.o.Dispatch(ctx, id); err != nil {
			rep.Errors = append(rep.Errors, err)
		}
	}
	r.mu.Lock()
	rep.FinishedJobs = len(r.finished)
	r.mu.Unlock()
	rep.Duration = time.Since(start)
	if r.OnReport != nil {
		r.OnReport(rep)
	}
	return rep
}

// inputObjects calls fn with every object of the input bucket, and in a
// versioned bucket (Versioned) with every version, saying which is the
// latest: jobs are keyed on version IDs, as S3 events are, so the listing
// must carry them.
func (r *Reconciler) inputObjects(ctx context.Context, fn func(oc s3event.ObjectCreated, latest bool)) error {
	bucket := r.o.cfg.InputBucket
	oc := func(key, etag, version string, size *int64) s3event.ObjectCreated {
		return s3event.ObjectCreated{EventName: "ObjectCreated:Reconcile", Bucket: bucket, Key: key,
			Size: aws.ToInt64(size), ETag: s3event.TrimETag(etag), VersionID: version}
	}
	if !r.Versioned {
		p := s3.NewListObjectsV2Paginator(r.o.s3, &s3.ListObjectsV2Input{Bucket: &bucket})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return fmt.Errorf("list s3://%s: %w", bucket, err)
			}
			for _, o := range page.Contents {
				fn(oc(aws.ToString(o.Key), aws.ToString(o.ETag), "", o.Size), true)
			}
		}
		return nil
	}
	p := s3.NewListObjectVersionsPaginator(r.o.s3, &s3.ListObjectVersionsInput{Bucket: &bucket})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list versions of s3://%s: %w", bucket, err)
		}
		for _, v := range page.Versions {
			fn(oc(aws.ToString(v.Key), aws.ToString(v.ETag), aws.ToString(v.VersionId), v.Size), aws.ToBool(v.IsLatest))
		}
	}
	return nil
}

// Forget makes the next pass read the job's record again (after an
// operator retries a finished job).
func (r *Reconciler) Forget(id string) {
	r.mu.Lock()
	delete(r.finished, id)
	r.mu.Unlock()
}

func (r *Reconciler) isFinished(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.finished[id]
}

func (r *Reconciler) setFinished(id string) {
	r.mu.Lock()
	r.finished[id] = true
	r.mu.Unlock()
}

// Start reconciles once now and then every Interval, until Stop.
func (r *Reconciler) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	r.stop = cancel
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.Interval)
		defer t.Stop()
		for {
			r.Reconcile(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// Stop ends the periodic passes and waits for the current one.
func (r *Reconciler) Stop() {
	if r.stop != nil {
		r.stop()
		<-r.done
	}
}
