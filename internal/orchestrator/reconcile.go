package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

// Defaults of the Reconciler.
const (
	DefaultReconcileInterval = 30 * time.Second
	DefaultPassBudget        = 10 * time.Second
	DefaultSweepEvery        = 6 * time.Hour
	DefaultParallel          = 8
	// DefaultRedispatchAfter and DefaultMaxUndelivered suit a dispatcher
	// that can lose deliveries (SSM): a command gets this long to reach a
	// worker, and a job this many deliveries. An in-process dispatcher sets
	// both to 0.
	DefaultRedispatchAfter = 15 * time.Minute
	DefaultMaxUndelivered  = 5
	// DefaultOrphanGrace is how old an active marker without a record must
	// be before it is removed: the record follows the marker within one
	// request, unless the writer crashed.
	DefaultOrphanGrace = time.Minute
)

// Report is what one reconciliation pass did.
type Report struct {
	Active          int  // active markers read (unfinished jobs)
	Unfinished      int  // unfinished jobs dispatched again
	NotDue          int  // unfinished jobs left alone: retry not due, dispatched recently, lease live or in hand
	Held            int  // unfinished jobs due but not sent: every worker's slots were taken (they stay queued)
	Undelivered     int  // jobs that ended dead: dispatched too often, never claimed
	Repaired        int  // index markers fixed (finished jobs still marked active, markers without a record)
	Objects         int  // input object versions swept
	Checked         int  // of which newer than the last completed sweep: their records looked up
	Missing         int  // current versions without a job: submitted
	Superseded      int  // older versions without a job: recorded superseded
	Expired         int  // finished records removed by retention
	Indexed         int  // records indexed by the one-time migration
	SweepDone       bool // this pass completed a sweep of the input bucket
	Limited         bool // the pass stopped at its budget; the next one resumes
	Errors          []error
	Duration        time.Duration
	ActiveCursorEnd bool // the active markers were read to their end
	// DispatchFailed counts dispatches that failed (also in Errors).
	DispatchFailed int
	// OldestUnfinished is when the oldest unfinished job this pass read
	// (this orchestrator's) was created; zero when none.
	OldestUnfinished time.Time
}

// Reconciler finds what events and crashes left behind, at a cost that
// follows the work in flight, not the history:
//
//   - every pass reads the active markers (the unfinished jobs) in
//     parallel, repairs the index, and dispatches what is due;
//   - every SweepEvery, a sweep lists the input bucket for objects whose
//     event was lost, incrementally: each pass goes on from where the last
//     one stopped, and only versions newer than the last completed sweep
//     are checked against the records;
//   - with Retention set, finished records older than it are removed.
//
// A pass stops at its budget (Budget, or the context's deadline if
// sooner) and saves its cursors in the state bucket (jobstore.StateKey),
// so the next pass, in this process or another, resumes where it stopped.
type Reconciler struct {
	o        *Orchestrator
	Interval time.Duration
	// Budget bounds one pass. Zero: the context's deadline when it has one
	// (a Lambda invocation's), else DefaultPassBudget.
	Budget time.Duration
	// MaxAge, if set, is the age beyond which an input version without a
	// record is never submitted by a sweep: its record may have expired
	// with the retention of history, and it must not be processed again.
	MaxAge time.Duration
	// SweepEvery is how often the input bucket is swept for lost events
	// (default DefaultSweepEvery). A lost event costs at most this much
	// delay plus the sweep's own length.
	SweepEvery time.Duration
	// Parallel is how many records a pass reads at once (default 8).
	Parallel int
	// Retention removes finished records older than it; 0 keeps them (on
	// AWS a lifecycle rule expires them instead).
	Retention time.Duration
	// RedispatchAfter leaves a job dispatched less than this long ago
	// alone: its command may be on its way (default
	// DefaultRedispatchAfter). 0 re-sends every pass (right where dispatch
	// is in process and InHand says what is in flight).
	RedispatchAfter time.Duration
	// MaxUndelivered ends a job dead after this many dispatches without a
	// worker claiming it (default DefaultMaxUndelivered); 0 never does (an
	// in-process dispatcher does not lose deliveries).
	MaxUndelivered int
	// OnReport, if set, receives every report (for logs and tests).
	OnReport func(Report)
	// ResumeLiveLeases dispatches running jobs again even while their lease
	// is live. Right where every worker shares one volume (conveyor up): the
	// volume's job lock, not the lease, tells whether an attempt is alive,
	// so a crashed one is resumed at once instead of after its lease.
	ResumeLiveLeases bool
	// Versioned lists the input bucket's versions, for a bucket with
	// versioning on, where jobs are keyed on version IDs.
	Versioned bool
	// InHand, if set, reports jobs the dispatcher already holds (queued or
	// running in this process): they are not dispatched again.
	InHand func(id string) bool
	// SweepOnStart makes the first pass of this reconciler start a sweep
	// (of the objects newer than the last one) whatever the period: where
	// events wait in memory (conveyor up), a crash loses those not handled,
	// and the restart finds them at once.
	SweepOnStart bool
	started      bool

	now        func() time.Time
	sweepSlack time.Duration
	state      *stateStore

	stop context.CancelFunc
	done chan struct{}
	mu   sync.Mutex // one pass at a time
}

// NewReconciler returns a reconciler for o.
func NewReconciler(o *Orchestrator, interval time.Duration) *Reconciler {
	if interval <= 0 {
		interval = DefaultReconcileInterval
	}
	return &Reconciler{o: o, Interval: interval, RedispatchAfter: DefaultRedispatchAfter, MaxUndelivered: DefaultMaxUndelivered,
		now: time.Now, sweepSlack: defaultSweepSlack, state: &stateStore{store: o.store, key: StatePrefix + o.dispatcher.Name() + ".json"}}
}

func (r *Reconciler) budget() time.Duration {
	if r.Budget > 0 {
		return r.Budget
	}
	return DefaultPassBudget
}

func (r *Reconciler) parallel() int {
	if r.Parallel > 0 {
		return r.Parallel
	}
	return DefaultParallel
}

func (r *Reconciler) sweepEvery() time.Duration {
	if r.SweepEvery > 0 {
		return r.SweepEvery
	}
	return DefaultSweepEvery
}

// Reconcile runs one pass.
func (r *Reconciler) Reconcile(ctx context.Context) Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := r.now()
	var rep Report
	deadline, ok := ctx.Deadline()
	if !ok || r.Budget > 0 && time.Now().Add(r.Budget).Before(deadline) {
		deadline = time.Now().Add(r.budget())
	}
	pass := &pass{r: r, ctx: ctx, deadline: deadline, rep: &rep}
	st, err := r.state.load(ctx)
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		rep.Duration = r.now().Sub(start)
		r.report(rep)
		return rep
	}
	if !st.Indexed {
		pass.migrate(st)
	}
	if r.SweepOnStart && !r.started && st.Sweep.StartedAt.IsZero() {
		st.Sweep.StartedAt = start.UTC()
	}
	r.started = true
	if st.Indexed {
		pass.active(st)
		if st.sweepDue(r.now(), r.sweepEvery()) {
			pass.sweep(st)
		}
		if r.Retention > 0 {
			pass.expire(st)
		}
	}
	st.LastPass = passInfo{At: start.UTC(), Duration: r.now().Sub(start).String(), Limited: rep.Limited}
	if err := r.state.save(context.WithoutCancel(ctx), st); err != nil {
		rep.Errors = append(rep.Errors, err)
	}
	rep.Duration = r.now().Sub(start)
	r.report(rep)
	return rep
}

func (r *Reconciler) report(rep Report) {
	if r.OnReport != nil {
		r.OnReport(rep)
	}
}

// pass is the state of one reconciliation pass.
type pass struct {
	r        *Reconciler
	ctx      context.Context
	deadline time.Time
	rep      *Report
	mu       sync.Mutex // guards rep from the parallel readers
}

// over reports whether the budget is spent, and marks the pass limited.
func (p *pass) over() bool {
	if time.Now().Before(p.deadline) && p.ctx.Err() == nil {
		return false
	}
	p.mu.Lock()
	p.rep.Limited = true
	p.mu.Unlock()
	return true
}

func (p *pass) fail(err error) {
	p.mu.Lock()
	p.rep.Errors = append(p.rep.Errors, err)
	p.mu.Unlock()
}

func (p *pass) count(f func(*Report)) {
	p.mu.Lock()
	f(p.rep)
	p.mu.Unlock()
}

// active reads the unfinished jobs from the cursor on, Parallel at a time.
func (p *pass) active(st *reconcileState) {
	ids := make(chan jobstore.ActiveEntry)
	var wg sync.WaitGroup
	for i := 0; i < p.r.parallel(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range ids {
				p.unfinished(e)
			}
		}()
	}
	last, end, n := st.ActiveCursor, true, 0
	err := p.r.o.store.Active(p.ctx, st.ActiveCursor, func(e jobstore.ActiveEntry) error {
		// At least one marker per pass, so that passes always progress.
		if n++; n > 1 && p.over() {
			end = false
			return jobstore.ErrStop
		}
		ids <- e
		last = e.ID
		return nil
	})
	close(ids)
	wg.Wait()
	if err != nil && p.ctx.Err() == nil {
		p.fail(err)
		return
	}
	if end && err == nil {
		st.ActiveCursor = "" // read to the end: the next pass starts over
		p.rep.ActiveCursorEnd = true
	} else {
		st.ActiveCursor = last
	}
}

// unfinished looks after one active marker.
func (p *pass) unfinished(e jobstore.ActiveEntry) {
	o, r := p.r.o, p.r
	p.count(func(rep *Report) { rep.Active++ })
	rec, _, err := o.store.Get(p.ctx, e.ID)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		// A marker whose record was never written (a crash between the
		// two): once it is old enough not to be a create in progress.
		if r.now().Sub(e.Modified) > DefaultOrphanGrace {
			if err := o.store.DeleteMarker(p.ctx, jobstore.ActiveKey(e.ID)); err != nil {
				p.fail(err)
			} else {
				p.count(func(rep *Report) { rep.Repaired++ })
			}
		}
		return
	case err != nil:
		p.fail(err)
		return
	case rec.State.Terminal():
		// The record finished but its markers were not updated (a crash
		// between the record write and the index write).
		if err := o.store.RepairIndex(p.ctx, rec); err != nil {
			p.fail(err)
		} else {
			p.count(func(rep *Report) { rep.Repaired++ })
		}
		return
	case rec.Dispatcher != "" && rec.Dispatcher != o.dispatcher.Name():
		return // another orchestrator's job (a Lambda sharing the state bucket)
	}
	p.count(func(rep *Report) {
		if rep.OldestUnfinished.IsZero() || rec.CreatedAt.Before(rep.OldestUnfinished) {
			rep.OldestUnfinished = rec.CreatedAt
		}
	})
	now := r.now()
	notDue := func() { p.count(func(rep *Report) { rep.NotDue++ }) }
	switch {
	case r.InHand != nil && r.InHand(rec.ID):
		notDue()
		return
	case rec.State == job.Running:
		if !r.ResumeLiveLeases && rec.LeaseUntil != nil && now.Before(*rec.LeaseUntil) {
			notDue() // a worker holds it and is alive
			return
		}
	case rec.State == job.Retrying && rec.NextAttemptAt != nil && now.Before(*rec.NextAttemptAt):
		notDue() // the retry is not due: its timer, or a later pass, sends it
		return
	case r.RedispatchAfter > 0 && rec.DispatchedAt != nil && now.Sub(*rec.DispatchedAt) < r.RedispatchAfter:
		notDue() // dispatched recently: its command may be on its way
		return
	case r.MaxUndelivered > 0 && rec.Dispatches >= r.MaxUndelivered:
		ended := false
		got, err := o.store.Update(p.ctx, rec.ID, func(x *job.Record) error {
			ended = false
			if x.State.Terminal() || x.State == job.Running || x.Dispatches < r.MaxUndelivered {
				return jobstore.ErrStop // claimed or changed meanwhile
			}
			ended = true
			return x.Undelivered(now)
		})
		switch {
		case err != nil:
			p.fail(err)
		case ended:
			o.changed(got)
			p.count(func(rep *Report) { rep.Undelivered++ })
		}
		return
	}
	if err := o.Dispatch(p.ctx, rec.ID); errors.Is(err, dispatch.ErrFull) {
		p.count(func(rep *Report) { rep.Held++ })
		return
	} else if err != nil {
		p.fail(err)
		p.count(func(rep *Report) { rep.DispatchFailed++ })
		return
	}
	p.count(func(rep *Report) { rep.Unfinished++ })
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

// headRecord reports whether a job has a record, by HEAD: cheaper than a
// GET, and all the sweep needs.
func (o *Orchestrator) headRecord(ctx context.Context, id string) (bool, error) {
	_, err := o.store.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &o.store.Bucket, Key: ptr(jobstore.Key(id))})
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, fmt.Errorf("check record %s: %w", id, err)
}

func ptr[T any](v T) *T { return &v }
