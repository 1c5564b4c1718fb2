package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// Default values of Config.
const (
	DefaultMaxAttempts = 3
)

// Config configures the orchestrator.
type Config struct {
	InputBucket string   // only objects in this bucket become jobs
	Prefixes    []string // if set, a key must start with one of them
	Suffixes    []string // if set, a key must end with one of them
	MaxAttempts int      // attempts per job; default DefaultMaxAttempts
}

// WithDefaults fills in unset fields.
func (c Config) WithDefaults() Config {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.InputBucket == "" {
		return errors.New("buckets.input must be set")
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > 100 {
		return fmt.Errorf("retry.max_attempts must be between 1 and 100, got %d", c.MaxAttempts)
	}
	return nil
}

// Orchestrator turns events into dispatched jobs.
type Orchestrator struct {
	cfg        Config
	s3         *s3.Client // for HEAD only: the orchestrator never reads data
	store      *jobstore.Store
	dispatcher dispatch.Dispatcher
	now        func() time.Time
	// OnChange, if set, is called with a record after this orchestrator
	// or its reconciler changed its state: a job created (queued), an
	// older version recorded superseded, a job ended dead because its
	// deliveries never reached a worker. Dispatch counts are no change. It
	// must return quickly and must not keep or modify the record. Set it
	// before use.
	OnChange func(*job.Record)
}

func (o *Orchestrator) changed(r *job.Record) {
	if o.OnChange != nil && r != nil {
		o.OnChange(r)
	}
}

// New returns an orchestrator. The S3 client is used to HEAD objects whose
// event lacks an ETag or size, never to read their content.
func New(cfg Config, client *s3.Client, store *jobstore.Store, d dispatch.Dispatcher) (*Orchestrator, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Orchestrator{cfg: cfg, s3: client, store: store, dispatcher: d, now: time.Now}, nil
}

// Outcome says what happened to one object.
type Outcome string

// Outcomes of Submit.
const (
	Created    Outcome = "created"    // new job, dispatched
	Duplicate  Outcome = "duplicate"  // the job existed already; nothing started
	Redispatch Outcome = "redispatch" // the job existed, unfinished and never picked up: sent again
	Filtered   Outcome = "filtered"   // not for us (other bucket, prefix/suffix, folder marker)
)

// Result is the outcome of one object.
type Result struct {
	Object  s3event.ObjectCreated
	JobID   string
	Outcome Outcome
	// Held says the job was not sent because every worker's slots were
	// taken (dispatch.ErrFull): it is recorded, queued, and sent again by
	// the reconciler. Not an error.
	Held bool
	Err  error
}

// HandleEvent parses a notification document and submits every object in
// it. A record that cannot be parsed is reported in the results and
// skipped; the returned error is non-nil only if a job could not be
// recorded or dispatched (so the caller's retry takes over) or the
// document itself is unreadable.
func (o *Orchestrator) HandleEvent(ctx context.Context, body []byte) ([]Result, error) {
	objs, bad, err := s3event.Parse(body)
	if errors.Is(err, s3event.ErrNotObjectCreated) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var results []Result
	for _, b := range bad {
		results = append(results, Result{Err: b})
	}
	var errs []error
	for _, oc := range objs {
		r := o.Submit(ctx, oc)
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
		results = append(results, r)
	}
	return results, errors.Join(errs...)
}

// Match reports whether key passes the configured filters.
func (o *Orchestrator) Match(bucket, key string) bool {
	if bucket != o.cfg.InputBucket || key == "" || strings.HasSuffix(key, "/") {
		return false
	}
	return matchAny(key, o.cfg.Prefixes, strings.HasPrefix) && matchAny(key, o.cfg.Suffixes, strings.HasSuffix)
}

func matchAny(key string, list []string, f func(string, string) bool) bool {
	if len(list) == 0 {
		return true
	}
	for _, p := range list {
		if f(key, p) {
			return true
		}
	}
	return false
}

// Submit makes sure the object has a job and that the job was dispatched.
func (o *Orchestrator) Submit(ctx context.Context, oc s3event.ObjectCreated) Result {
	res := Result{Object: oc}
	if !o.Match(oc.Bucket, oc.Key) {
		res.Outcome = Filtered
		return res
	}
	if oc.ETag == "" && oc.VersionID == "" || oc.Size == 0 {
		// Multipart and copy events of the embedded server carry no size;
		// HEAD is metadata only.
		head, err := o.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &oc.Bucket, Key: &oc.Key, VersionId: nilIfEmpty(oc.VersionID)})
		if err != nil {
			res.Err = fmt.Errorf("head s3://%s/%s: %w", oc.Bucket, job.Printable(oc.Key), err)
			return res
		}
		oc.Size = aws.ToInt64(head.ContentLength)
		if oc.ETag == "" {
			oc.ETag = s3event.TrimETag(aws.ToString(head.ETag))
		}
		if oc.VersionID == "" {
			oc.VersionID = aws.ToString(head.VersionId)
		}
		res.Object = oc
	}
	rec := job.New(oc.Bucket, oc.Key, oc.VersionID, oc.ETag, oc.Size, o.cfg.MaxAttempts, o.now())
	res.JobID = rec.ID
	rec.Dispatcher = o.dispatcher.Name()
	// The dispatch follows the creation at once: counted here, it costs no
	// second write of the record.
	rec.Dispatched(o.now(), "")
	err := o.store.Create(ctx, rec)
	switch {
	case errors.Is(err, jobstore.ErrExists):
		existing, _, gerr := o.store.Get(ctx, rec.ID)
		if gerr != nil {
			res.Err = gerr
			return res
		}
		if existing.State.Terminal() {
			// Create wrote an active marker before it found the record:
			// take it back (the reconciler would otherwise).
			_ = o.store.RepairIndex(ctx, existing)
		}
		// A duplicate event for a job still queued may follow a failed
		// dispatch; sending it again is harmless (the worker's claim is
		// conditional), sending nothing could strand it.
		if existing.State != job.Queued || existing.CommandID != "" {
			res.Outcome = Duplicate
			return res
		}
		res.Outcome = Redispatch
	case err != nil:
		res.Err = err
		return res
	default:
		res.Outcome = Created
		o.changed(rec)
	}
	var err2 error
	if res.Outcome == Created {
		err2 = o.send(ctx, rec.ID)
	} else {
		err2 = o.Dispatch(ctx, rec.ID)
	}
	switch {
	case errors.Is(err2, dispatch.ErrFull):
		res.Held = true
	case err2 != nil:
		res.Err = err2
	}
	return res
}

// RecordSuperseded creates the record of an object version that is no
// longer current and never had one (its event was lost), directly in the
// superseded state; it is never dispatched. An existing record is left as
// it is.
func (o *Orchestrator) RecordSuperseded(ctx context.Context, oc s3event.ObjectCreated) error {
	now := o.now()
	rec := job.New(oc.Bucket, oc.Key, oc.VersionID, oc.ETag, oc.Size, o.cfg.MaxAttempts, now)
	rec.Dispatcher = o.dispatcher.Name()
	if err := rec.Supersede(now, "a newer version was uploaded before this one's event was handled"); err != nil {
		return err
	}
	err := o.store.Create(ctx, rec)
	switch {
	case errors.Is(err, jobstore.ErrExists):
		return nil
	case err != nil:
		return err
	}
	o.changed(rec)
	return nil
}

// send hands a just-created job (its dispatch already counted in the
// record) to the dispatcher, and records the delivery's reference (the SSM
// command ID) when there is one.
func (o *Orchestrator) send(ctx context.Context, id string) error {
	ref, err := o.dispatcher.Dispatch(ctx, id)
	if errors.Is(err, dispatch.ErrFull) {
		// Not sent: take back the dispatch counted at creation, so the
		// reconciler's next pass sends it rather than waiting for it.
		_, uerr := o.store.Update(ctx, id, func(r *job.Record) error {
			if r.State != job.Queued || r.CommandID != "" {
				return jobstore.ErrStop
			}
			r.Held(o.now())
			return nil
		})
		return errors.Join(fmt.Errorf("dispatch job %s: %w", id, err), uerr)
	}
	if err != nil {
		return dispatchError{fmt.Errorf("dispatch job %s: %w", id, err)}
	}
	if ref == "" {
		return nil
	}
	_, err = o.store.Update(ctx, id, func(r *job.Record) error {
		r.CommandID = ref
		r.UpdatedAt = o.now().UTC()
		return nil
	})
	return err
}

// Dispatch hands an existing job to the dispatcher again and records it:
// when, how often since a worker last claimed it, and the delivery's
// reference (the SSM command ID) when there is one. When every worker's
// slots are taken the error wraps dispatch.ErrFull and nothing is recorded.
func (o *Orchestrator) Dispatch(ctx context.Context, id string) error {
	ref, err := o.dispatcher.Dispatch(ctx, id)
	if err != nil {
		return dispatchError{fmt.Errorf("dispatch job %s: %w", id, err)}
	}
	_, err = o.store.Update(ctx, id, func(r *job.Record) error {
		if r.State.Terminal() || r.State == job.Running && ref == "" {
			return jobstore.ErrStop // claimed meanwhile: nothing to count
		}
		r.Dispatched(o.now(), ref)
		return nil
	})
	return err
}

// dispatchError marks an error of the dispatcher (the job is recorded).
type dispatchError struct{ error }

func (e dispatchError) Unwrap() error { return e.error }

// IsDispatchFailure reports whether err (a Result's, or one of Reconcile's)
// is a dispatch that failed, the job being recorded: what the
// DispatchFailed metric counts.
func IsDispatchFailure(err error) bool {
	var de dispatchError
	return errors.As(err, &de)
}

// nilIfEmpty also drops "null", the version of an object stored before
// versioning: a HEAD naming it is refused by some stores, and the current
// object is the one meant.
func nilIfEmpty(s string) *string {
	if s == "" || s == "null" {
		return nil
	}
	return &s
}
