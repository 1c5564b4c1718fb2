package orchestrator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

func exists(t *testing.T, b bundle, key string) bool {
	t.Helper()
	_, err := b.srv.Client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &b.store.Bucket, Key: aws.String(key)})
	return err == nil
}

func markers(t *testing.T, b bundle, prefix string) []string {
	t.Helper()
	out, err := b.srv.Client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &b.store.Bucket, Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// TestIndexFollowsTransitions: creating a job marks it active; finishing
// it moves it to done; an operator's retry makes it active again.
func TestIndexFollowsTransitions(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	res, _ := o.HandleEvent(ctx, put(t, b, "k", "x"))
	id := res[0].JobID
	if !exists(t, b, jobstore.ActiveKey(id)) {
		t.Fatal("a new job has no active marker")
	}
	rec, err := b.store.Update(ctx, id, func(r *job.Record) error {
		r.Claim("v/p", "t", time.Now(), time.Minute, false)
		r.Succeed(time.Now(), nil)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if exists(t, b, jobstore.ActiveKey(id)) || !exists(t, b, jobstore.DoneKey(job.Succeeded, *rec.FinishedAt, id)) {
		t.Fatalf("finished job: active %v, done %v", markers(t, b, jobstore.ActivePrefix), markers(t, b, jobstore.DonePrefix))
	}
	tags, err := b.srv.Client.GetObjectTagging(ctx, &s3.GetObjectTaggingInput{Bucket: &b.store.Bucket, Key: aws.String(jobstore.Key(id))})
	if err != nil || len(tags.TagSet) != 1 || aws.ToString(tags.TagSet[0].Key)+"="+aws.ToString(tags.TagSet[0].Value) != jobstore.FinishedTag {
		t.Fatalf("finished record's tags: %+v, %v; want %s for the lifecycle rule", tags, err, jobstore.FinishedTag)
	}
	if _, err := b.store.Update(ctx, id, func(r *job.Record) error { return r.Retry(time.Now(), 1) }); err != nil {
		t.Fatal(err)
	}
	if !exists(t, b, jobstore.ActiveKey(id)) || len(markers(t, b, jobstore.DonePrefix)) != 0 {
		t.Fatalf("retried job: active %v, done %v", markers(t, b, jobstore.ActivePrefix), markers(t, b, jobstore.DonePrefix))
	}
}

// TestIndexRepairedAfterACrashBetweenRecordAndMarker, both orders: an
// active marker whose record was never written goes once it is old
// enough; a finished record still marked active gets its done marker.
func TestIndexRepairedAfterACrashBetweenRecordAndMarker(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	// Order 1: the marker was written, then the process died before the
	// record.
	orphan := job.ID(b.input, "never-written", "v:1")
	if _, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.store.Bucket, Key: aws.String(jobstore.ActiveKey(orphan)), Body: strings.NewReader("")}); err != nil {
		t.Fatal(err)
	}
	// Order 2: the record was written finished, then the process died
	// before its markers.
	res, _ := o.HandleEvent(ctx, put(t, b, "k", "x"))
	id := res[0].JobID
	rec, _, _ := b.store.Get(ctx, id)
	rec.Claim("v/p", "t", time.Now(), time.Minute, false)
	rec.Succeed(time.Now(), nil)
	body, _ := json.Marshal(rec)
	if _, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.store.Bucket, Key: aws.String(jobstore.Key(id)), Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}

	r := orchestrator.NewReconciler(o, time.Hour)
	rep := r.Reconcile(ctx)
	if rep.Repaired != 1 || !exists(t, b, jobstore.ActiveKey(orphan)) {
		t.Fatalf("first pass: %+v; a fresh marker without a record must be left (its create may be in progress)", rep)
	}
	if exists(t, b, jobstore.ActiveKey(id)) || !exists(t, b, jobstore.DoneKey(job.Succeeded, *rec.FinishedAt, id)) {
		t.Fatalf("finished job still indexed as active: %v / %v", markers(t, b, jobstore.ActivePrefix), markers(t, b, jobstore.DonePrefix))
	}
	orchestrator.SetNow(r, func() time.Time { return time.Now().Add(2 * orchestrator.DefaultOrphanGrace) })
	if rep := r.Reconcile(ctx); rep.Repaired != 1 || exists(t, b, jobstore.ActiveKey(orphan)) {
		t.Fatalf("second pass: %+v; an old marker without a record must go", rep)
	}
}

// TestJobNeverClaimedEndsDeadAfterNDispatches: a job whose commands never
// reach a worker is not re-sent forever.
func TestJobNeverClaimedEndsDeadAfterNDispatches(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	res, _ := o.HandleEvent(ctx, put(t, b, "lost-commands", "x"))
	id := res[0].JobID
	r := orchestrator.NewReconciler(o, time.Hour)
	r.MaxUndelivered = 3
	r.RedispatchAfter = 0 // every pass re-sends
	for pass := 1; pass <= 2; pass++ {
		if rep := r.Reconcile(ctx); rep.Unfinished != 1 {
			t.Fatalf("pass %d: %+v, want the job sent again", pass, rep)
		}
	}
	rec, _, _ := b.store.Get(ctx, id)
	if rec.Dispatches != 3 || rec.DispatchedAt == nil {
		t.Fatalf("after 3 dispatches the record says %d, at %v", rec.Dispatches, rec.DispatchedAt)
	}
	if rep := r.Reconcile(ctx); rep.Undelivered != 1 || rep.Unfinished != 0 {
		t.Fatalf("third pass: %+v, want the job dead, not sent again", rep)
	}
	rec, _, _ = b.store.Get(ctx, id)
	if rec.State != job.Dead || !strings.Contains(rec.Error, "never claimed by a worker") {
		t.Fatalf("record: %s %q", rec.State, rec.Error)
	}
	if len(b.disp.Dispatched()) != 3 {
		t.Fatalf("dispatched %d times, want 3", len(b.disp.Dispatched()))
	}
	// A claim resets the count: a job that does reach workers is never
	// "undelivered", however often it is sent.
	res, _ = o.HandleEvent(ctx, put(t, b, "reaches-workers", "y"))
	for i := 0; i < 5; i++ {
		b.store.Update(ctx, res[0].JobID, func(x *job.Record) error {
			x.Claim("v/p", "t", time.Now(), time.Minute, false)
			x.Fail(time.Now(), nil, "boom", false, 0)
			return nil
		})
		r.Reconcile(ctx)
	}
	if rec, _, _ := b.store.Get(ctx, res[0].JobID); rec.State == job.Dead && strings.Contains(rec.Error, "never claimed") {
		t.Fatalf("a job that workers claim was declared undelivered: %q", rec.Error)
	}
}

// TestRetryNotDueAndRecentDispatchAreNotResent.
func TestRetryNotDueAndRecentDispatchAreNotResent(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	res, _ := o.HandleEvent(ctx, put(t, b, "later", "x"))
	id := res[0].JobID
	b.store.Update(ctx, id, func(r *job.Record) error {
		r.Claim("v/p", "t", time.Now(), time.Minute, false)
		r.Fail(time.Now(), nil, "boom", false, time.Hour)
		return nil
	})
	b.disp.Reset()
	r := orchestrator.NewReconciler(o, time.Hour)
	if rep := r.Reconcile(ctx); rep.NotDue != 1 || len(b.disp.Dispatched()) != 0 {
		t.Fatalf("retry due in an hour: %+v, dispatched %v", rep, b.disp.Dispatched())
	}
	orchestrator.SetNow(r, func() time.Time { return time.Now().Add(2 * time.Hour) })
	if rep := r.Reconcile(ctx); rep.Unfinished != 1 {
		t.Fatalf("retry due: %+v", rep)
	}
	// Dispatched a moment ago (the pass above): with RedispatchAfter, left alone.
	orchestrator.SetNow(r, time.Now)
	r.RedispatchAfter = time.Hour
	b.disp.Reset()
	if rep := r.Reconcile(ctx); rep.NotDue != 1 || len(b.disp.Dispatched()) != 0 {
		t.Fatalf("dispatched recently: %+v", rep)
	}
}

// TestRetentionKeepsAndDropsTheRightRecords: finished records older than
// the retention go with their markers; younger ones, unfinished ones and
// one finished long ago but retried since stay.
func TestRetentionKeepsAndDropsTheRightRecords(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	finish := func(key string, age time.Duration, state job.State) string {
		res, _ := o.HandleEvent(ctx, put(t, b, key, key))
		at := time.Now().Add(-age)
		b.store.Update(ctx, res[0].JobID, func(r *job.Record) error {
			r.Claim("v/p", "t", at, time.Minute, false)
			if state == job.Dead {
				r.Fail(at, nil, "boom", true, 0)
			} else {
				r.Succeed(at, nil)
			}
			return nil
		})
		return res[0].JobID
	}
	old := finish("old", 40*24*time.Hour, job.Succeeded)
	oldDead := finish("old-dead", 31*24*time.Hour, job.Dead)
	young := finish("young", 24*time.Hour, job.Succeeded)
	retried := finish("retried", 40*24*time.Hour, job.Dead)
	b.store.Update(ctx, retried, func(r *job.Record) error { return r.Retry(time.Now(), 1) })
	res, _ := o.HandleEvent(ctx, put(t, b, "unfinished", "u"))
	unfinished := res[0].JobID

	r := orchestrator.NewReconciler(o, time.Hour)
	r.Retention = 30 * 24 * time.Hour
	rep := r.Reconcile(ctx)
	if rep.Expired != 2 || len(rep.Errors) > 0 {
		t.Fatalf("report %+v, want 2 expired", rep)
	}
	for id, keep := range map[string]bool{old: false, oldDead: false, young: true, retried: true, unfinished: true} {
		_, _, err := b.store.Get(ctx, id)
		if kept := err == nil; kept != keep {
			t.Errorf("job %s: kept %v, want %v (%v)", id, kept, keep, err)
		}
	}
	if m := markers(t, b, jobstore.DonePrefix); len(m) != 1 {
		t.Errorf("done markers left: %v, want the young job's only", m)
	}
}

// TestPassStopsAtItsBudgetAndResumes: a pass over budget says so and
// saves its cursor; the following passes go on from there, and every
// unfinished job is seen once per round.
func TestPassStopsAtItsBudgetAndResumes(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	const n = 12
	for i := 0; i < n; i++ {
		o.HandleEvent(ctx, put(t, b, fmt.Sprintf("k%02d", i), "x"))
	}
	b.disp.Reset()
	r := orchestrator.NewReconciler(o, time.Hour)
	r.RedispatchAfter = 0
	r.Budget = time.Nanosecond // one marker per pass
	r.Parallel = 1
	seen := map[string]int{}
	passes := 0
	for {
		rep := r.Reconcile(ctx)
		passes++
		if passes == 1 && !rep.Limited {
			t.Fatalf("first pass over budget not marked limited: %+v", rep)
		}
		if rep.ActiveCursorEnd || passes > 3*n {
			break
		}
	}
	for _, id := range b.disp.Dispatched() {
		seen[id]++
	}
	if len(seen) != n {
		t.Fatalf("after %d limited passes, %d of %d unfinished jobs were seen", passes, len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("job %s dispatched %d times in one round", id, c)
		}
	}
	// A cursor saved by this reconciler is honoured by another one (the
	// next Lambda invocation, a restarted process).
	b.disp.Reset()
	r2 := orchestrator.NewReconciler(o, time.Hour)
	r2.RedispatchAfter = 0
	r2.Budget = time.Nanosecond
	r2.Parallel = 1
	r2.Reconcile(ctx)
	r.Reconcile(ctx)
	if d := b.disp.Dispatched(); len(d) != 2 || d[0] == d[1] {
		t.Fatalf("two passes by two reconcilers dispatched %v, want two different jobs", d)
	}
}

// TestSweepIsIncrementalAndChecksOnlyNewObjects: a sweep over a bucket
// larger than one pass spreads over passes; a later sweep looks up only
// the objects newer than the last completed one.
func TestSweepIsIncrementalAndChecksOnlyNewObjects(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	const n = 1500 // a listing page is 1,000
	for i := 0; i < n; i++ {
		if _, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.input, Key: aws.String(fmt.Sprintf("old/%04d", i)), Body: strings.NewReader("o")}); err != nil {
			t.Fatal(err)
		}
	}
	r := orchestrator.NewReconciler(o, time.Hour)
	r.InHand = func(string) bool { return true } // this test is about the sweep
	orchestrator.SetSweepSlack(r, 0)
	r.Budget = time.Nanosecond // one listing page per pass
	rep1 := r.Reconcile(ctx)
	rep2 := r.Reconcile(ctx)
	if rep1.SweepDone || !rep1.Limited || !rep2.SweepDone || rep1.Missing+rep2.Missing != n {
		t.Fatalf("sweep over two passes: %+v then %+v; want %d missing in all", rep1, rep2, n)
	}
	// The next sweep, due later, lists everything but looks up only what
	// arrived since the last one started (listings give seconds: wait for
	// the next one).
	time.Sleep(1100 * time.Millisecond)
	if _, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.input, Key: aws.String("new/lost"), Body: strings.NewReader("n")}); err != nil {
		t.Fatal(err)
	}
	r.Budget = time.Minute
	orchestrator.SetNow(r, func() time.Time { return time.Now().Add(orchestrator.DefaultSweepEvery + time.Hour) })
	rep := r.Reconcile(ctx)
	if !rep.SweepDone || rep.Objects != n+1 || rep.Missing != 1 || rep.Checked > n/10 {
		t.Fatalf("second sweep: %+v; want %d objects listed, 1 missing, only recent ones checked", rep, n+1)
	}
}
