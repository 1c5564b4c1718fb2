package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// StatePrefix is where reconcilers keep their cursors in the state bucket:
// one object per dispatcher (reconcile/<dispatcher>.json), so that two
// orchestrators sharing a state bucket keep their own.
const StatePrefix = "reconcile/"

// defaultSweepSlack widens what a sweep checks beyond the last completed
// one's start: clocks of the store and of this process differ a little,
// and listings give times to the second.
const defaultSweepSlack = 5 * time.Minute

// reconcileState is what passes hand on to the next one.
type reconcileState struct {
	// Indexed is set once every record has its index markers (the
	// one-time migration from a state bucket without an index).
	Indexed     bool   `json:"indexed"`
	IndexCursor string `json:"index_cursor,omitempty"`
	// ActiveCursor is the last active marker read by a pass that ran out
	// of budget; empty when the last pass read them all.
	ActiveCursor string     `json:"active_cursor,omitempty"`
	Sweep        sweepState `json:"sweep"`
	LastPass     passInfo   `json:"last_pass"`
}

type sweepState struct {
	KeyMarker     string    `json:"key_marker,omitempty"`
	VersionMarker string    `json:"version_marker,omitempty"`
	StartedAt     time.Time `json:"started_at,omitzero"`     // of the sweep in progress
	LastCompleted time.Time `json:"last_completed,omitzero"` // start of the last completed sweep
}

type passInfo struct {
	At       time.Time `json:"at,omitzero"`
	Duration string    `json:"duration,omitempty"`
	Limited  bool      `json:"limited,omitempty"`
}

func (s *reconcileState) sweepDue(now time.Time, every time.Duration) bool {
	return !s.Sweep.StartedAt.IsZero() || now.Sub(s.Sweep.LastCompleted) >= every
}

// stateStore reads and writes the reconciler's state object.
type stateStore struct {
	store *jobstore.Store
	key   string
}

func (s *stateStore) load(ctx context.Context) (*reconcileState, error) {
	out, err := s.store.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.store.Bucket, Key: aws.String(s.key)})
	if isNotFound(err) {
		// No state yet: a new state bucket, or one written before the
		// index. Any marker means the index is there already.
		indexed, err := s.hasMarkers(ctx)
		return &reconcileState{Indexed: indexed}, err
	}
	if err != nil {
		return nil, fmt.Errorf("read reconciler state: %w", err)
	}
	defer out.Body.Close()
	var st reconcileState
	b, err := io.ReadAll(out.Body)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		return nil, fmt.Errorf("read reconciler state s3://%s/%s: %w", s.store.Bucket, s.key, err)
	}
	return &st, nil
}

func (s *stateStore) hasMarkers(ctx context.Context) (bool, error) {
	for _, prefix := range []string{jobstore.ActivePrefix, jobstore.DonePrefix} {
		out, err := s.store.S3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &s.store.Bucket, Prefix: aws.String(prefix), MaxKeys: aws.Int32(1)})
		if err != nil {
			return false, fmt.Errorf("look for the job index: %w", err)
		}
		if len(out.Contents) > 0 {
			return true, nil
		}
	}
	return false, nil
}

func (s *stateStore) save(ctx context.Context, st *reconcileState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	_, err = s.store.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.store.Bucket, Key: aws.String(s.key), Body: bytes.NewReader(b), ContentType: aws.String("application/json")})
	if err != nil {
		return fmt.Errorf("save reconciler state: %w", err)
	}
	return nil
}

// parallelDo runs f on every item, Parallel at a time.
func (p *pass) parallelDo(items []string, f func(string)) {
	ch := make(chan string)
	var wg sync.WaitGroup
	for i := 0; i < min(p.r.parallel(), len(items)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				f(it)
			}
		}()
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
}

// migrate gives every record written before the index its markers, from
// where the last pass stopped: once, for a state bucket from an older
// Conveyor.
func (p *pass) migrate(st *reconcileState) {
	store := p.r.o.store
	for first := true; first || !p.over(); first = false {
		out, err := store.S3.ListObjectsV2(p.ctx, &s3.ListObjectsV2Input{
			Bucket: &store.Bucket, Prefix: aws.String(jobstore.Prefix), StartAfter: nilIfEmptyKey(st.IndexCursor), MaxKeys: aws.Int32(500),
		})
		if err != nil {
			p.fail(fmt.Errorf("index the job records: %w", err))
			return
		}
		var ids []string
		for _, o := range out.Contents {
			id := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(o.Key), jobstore.Prefix), ".json")
			if job.ValidID(id) {
				ids = append(ids, id)
			}
		}
		p.parallelDo(ids, func(id string) {
			rec, _, err := store.Get(p.ctx, id)
			if errors.Is(err, jobstore.ErrNotFound) {
				return
			}
			if err == nil {
				err = store.RepairIndex(p.ctx, rec)
			}
			if err != nil {
				p.fail(err)
				return
			}
			p.count(func(rep *Report) { rep.Indexed++ })
		})
		if len(out.Contents) > 0 {
			st.IndexCursor = aws.ToString(out.Contents[len(out.Contents)-1].Key)
		}
		if !aws.ToBool(out.IsTruncated) {
			st.Indexed, st.IndexCursor = true, ""
			return
		}
	}
}

func nilIfEmptyKey(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// sweep lists the input bucket from the saved markers on, and gives every
// object version newer than the last completed sweep that has no record
// its job (the latest version) or a superseded record (an older one).
func (p *pass) sweep(st *reconcileState) {
	now := p.r.now()
	if st.Sweep.StartedAt.IsZero() {
		st.Sweep.StartedAt = now.UTC()
	}
	since := time.Time{}
	if !st.Sweep.LastCompleted.IsZero() {
		since = st.Sweep.LastCompleted.Add(-p.r.sweepSlack)
	}
	for first := true; first || !p.over(); first = false {
		objs, done, err := p.r.inputPage(p.ctx, &st.Sweep)
		if err != nil {
			p.fail(err)
			return
		}
		type candidate struct {
			oc     s3event.ObjectCreated
			latest bool
		}
		var cands []candidate
		for _, v := range objs {
			p.count(func(rep *Report) { rep.Objects++ })
			if !p.r.o.Match(v.oc.Bucket, v.oc.Key) || (!since.IsZero() && v.modified.Before(since)) {
				continue // an older object was checked by an earlier sweep
			}
			if p.r.MaxAge > 0 && now.Sub(v.modified) > p.r.MaxAge {
				continue // beyond the history kept: its record may have expired
			}
			cands = append(cands, candidate{v.oc, v.latest})
		}
		p.count(func(rep *Report) { rep.Checked += len(cands) })
		byID := map[string]candidate{}
		var ids []string
		for _, c := range cands {
			id := job.ID(c.oc.Bucket, c.oc.Key, job.Revision(c.oc.VersionID, c.oc.ETag))
			byID[id] = c
			ids = append(ids, id)
		}
		p.parallelDo(ids, func(id string) {
			c := byID[id]
			exists, err := p.r.o.headRecord(p.ctx, id)
			if err != nil || exists {
				if err != nil {
					p.fail(err)
				}
				return
			}
			if !c.latest {
				// An older version whose event was lost: every version
				// ends in one terminal record, and this one can only be
				// superseded.
				if err := p.r.o.RecordSuperseded(p.ctx, c.oc); err != nil {
					p.fail(err)
				} else {
					p.count(func(rep *Report) { rep.Superseded++ })
				}
				return
			}
			res := p.r.o.Submit(p.ctx, c.oc)
			if res.Err != nil {
				p.fail(res.Err)
				if IsDispatchFailure(res.Err) {
					p.count(func(rep *Report) { rep.DispatchFailed++ })
				}
			} else {
				p.count(func(rep *Report) { rep.Missing++ })
			}
		})
		if done {
			st.Sweep = sweepState{LastCompleted: st.Sweep.StartedAt}
			p.rep.SweepDone = true
			return
		}
	}
}

// listed is one object version of a sweep page.
type listed struct {
	oc       s3event.ObjectCreated
	latest   bool
	modified time.Time
}

// inputPage lists one page of the input bucket from the markers in sw,
// advances them, and reports whether the listing is complete.
func (r *Reconciler) inputPage(ctx context.Context, sw *sweepState) ([]listed, bool, error) {
	bucket := r.o.cfg.InputBucket
	oc := func(key, etag, version string, size *int64) s3event.ObjectCreated {
		return s3event.ObjectCreated{EventName: "ObjectCreated:Reconcile", Bucket: bucket, Key: key,
			Size: aws.ToInt64(size), ETag: s3event.TrimETag(etag), VersionID: version}
	}
	var out []listed
	if !r.Versioned {
		page, err := r.o.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket, StartAfter: nilIfEmptyKey(sw.KeyMarker), MaxKeys: aws.Int32(1000)})
		if err != nil {
			return nil, false, fmt.Errorf("list s3://%s: %w", bucket, err)
		}
		for _, o := range page.Contents {
			out = append(out, listed{oc(aws.ToString(o.Key), aws.ToString(o.ETag), "", o.Size), true, aws.ToTime(o.LastModified)})
			sw.KeyMarker = aws.ToString(o.Key)
		}
		return out, !aws.ToBool(page.IsTruncated), nil
	}
	in := &s3.ListObjectVersionsInput{Bucket: &bucket, MaxKeys: aws.Int32(1000)}
	if sw.KeyMarker != "" {
		in.KeyMarker = aws.String(sw.KeyMarker)
		if sw.VersionMarker != "" {
			in.VersionIdMarker = aws.String(sw.VersionMarker)
		}
	}
	page, err := r.o.s3.ListObjectVersions(ctx, in)
	if err != nil {
		return nil, false, fmt.Errorf("list versions of s3://%s: %w", bucket, err)
	}
	for _, v := range page.Versions {
		out = append(out, listed{oc(aws.ToString(v.Key), aws.ToString(v.ETag), aws.ToString(v.VersionId), v.Size), aws.ToBool(v.IsLatest), aws.ToTime(v.LastModified)})
	}
	sw.KeyMarker, sw.VersionMarker = aws.ToString(page.NextKeyMarker), aws.ToString(page.NextVersionIdMarker)
	return out, !aws.ToBool(page.IsTruncated), nil
}

// expire removes finished records older than the retention, newest first
// from the cutoff on: what the listing returns is exactly what expired.
func (p *pass) expire(st *reconcileState) {
	store := p.r.o.store
	cutoff := p.r.now().Add(-p.r.Retention)
	for _, state := range []job.State{job.Succeeded, job.Dead, job.Superseded} {
		var batch []jobstore.DoneEntry
		err := store.Done(p.ctx, state, jobstore.DoneBefore(state, cutoff), 0, func(e jobstore.DoneEntry) error {
			if p.over() {
				return jobstore.ErrStop
			}
			batch = append(batch, e)
			if len(batch) == 200 {
				p.expireBatch(batch, cutoff)
				batch = batch[:0]
			}
			return nil
		})
		p.expireBatch(batch, cutoff)
		if err != nil {
			p.fail(err)
		}
		if p.over() {
			return
		}
	}
}

func (p *pass) expireBatch(batch []jobstore.DoneEntry, cutoff time.Time) {
	store := p.r.o.store
	markers := map[string]string{}
	var ids []string
	for _, e := range batch {
		markers[e.ID] = e.Marker
		ids = append(ids, e.ID)
	}
	p.parallelDo(ids, func(id string) {
		rec, _, err := store.Get(p.ctx, id)
		switch {
		case errors.Is(err, jobstore.ErrNotFound):
			err = store.DeleteMarker(p.ctx, markers[id]) // the record went first
		case err != nil:
		case !rec.State.Terminal() || rec.FinishedAt == nil || !rec.FinishedAt.Before(cutoff):
			// Retried since: this marker is stale, the record is not.
			err = store.DeleteMarker(p.ctx, markers[id])
		default:
			if err = store.Delete(p.ctx, rec); err == nil {
				p.count(func(rep *Report) { rep.Expired++ })
			}
		}
		if err != nil {
			p.fail(err)
		}
	})
}

func isNotFound(err error) bool { return jobstore.IsNotFound(err) }
