package orchestrator_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

func TestReconcilerFindsLostEventsAndUnfinishedJobs(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	// Three objects whose events were lost.
	for _, k := range []string{"lost/1", "lost/2", "lost dir/é 3"} {
		if _, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.input, Key: aws.String(k), Body: bytes.NewReader([]byte(k))}); err != nil {
			t.Fatal(err)
		}
	}
	// One job finished, one left running by a crashed worker whose lease
	// lapsed, one held by a live worker elsewhere.
	done, _ := o.HandleEvent(ctx, put(t, b, "done.txt", "d"))
	crashed, _ := o.HandleEvent(ctx, put(t, b, "crashed.txt", "c"))
	live, _ := o.HandleEvent(ctx, put(t, b, "live.txt", "l"))
	b.store.Update(ctx, live[0].JobID, func(r *job.Record) error { return r.Claim("vol-b/p", "tok", time.Now(), time.Hour, false) })
	b.store.Update(ctx, done[0].JobID, func(r *job.Record) error {
		r.Claim("vol/p", "tok", time.Now(), time.Minute, false)
		r.Succeed(time.Now(), nil)
		return nil
	})
	b.store.Update(ctx, crashed[0].JobID, func(r *job.Record) error { return r.Claim("vol/p", "tok", time.Now(), -time.Second, false) })
	b.disp.Reset()

	r := orchestrator.NewReconciler(o, time.Hour)
	r.RedispatchAfter = 0
	rep := r.Reconcile(ctx)
	if len(rep.Errors) > 0 {
		t.Fatal(rep.Errors)
	}
	if rep.Objects != 6 || rep.Missing != 3 || rep.Unfinished != 1 {
		t.Fatalf("report %+v, want 6 objects, 3 missing, 1 unfinished", rep)
	}
	got := map[string]bool{}
	for _, id := range b.disp.Dispatched() {
		got[id] = true
	}
	if !got[crashed[0].JobID] || got[done[0].JobID] || got[live[0].JobID] || len(got) != 4 {
		t.Fatalf("dispatched %v", b.disp.Dispatched())
	}
	// Where all workers share one volume (conveyor up), the volume's job
	// locks arbitrate: running jobs are sent again whatever their lease says.
	r.ResumeLiveLeases = true
	b.disp.Reset()
	if rep := r.Reconcile(ctx); rep.Unfinished != 5 { // 3 queued, crashed, live
		t.Fatalf("with ResumeLiveLeases: %+v", rep)
	}
	// Another pass creates nothing new, and reads only the unfinished
	// jobs: the finished one has no active marker.
	rep = r.Reconcile(ctx)
	if rep.Missing != 0 || rep.Active != 5 || rep.Objects != 0 {
		t.Fatalf("third pass: %+v, want 5 active jobs read and no sweep (not due)", rep)
	}
}

// A job another orchestrator dispatched (a Lambda sharing the state bucket)
// is left to it.
func TestReconcilerLeavesOtherDispatchersJobs(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	res, _ := o.HandleEvent(ctx, put(t, b, "theirs.txt", "t"))
	b.store.Update(ctx, res[0].JobID, func(r *job.Record) error { r.Dispatcher = "ssm"; return nil })
	b.disp.Reset()
	rep := orchestrator.NewReconciler(o, time.Hour).Reconcile(ctx)
	if rep.Unfinished != 0 || len(b.disp.Dispatched()) != 0 {
		t.Fatalf("another dispatcher's queued job was taken: %+v %v", rep, b.disp.Dispatched())
	}
}

// With Versioned, the reconciler lists object versions, as it must where
// jobs are keyed on version IDs; an object with a job is not submitted
// again, one whose event was lost is.
func TestReconcilerListsVersions(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	o.HandleEvent(ctx, put(t, b, "seen.txt", "s"))
	if _, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.input, Key: aws.String("lost.txt"), Body: bytes.NewReader([]byte("l"))}); err != nil {
		t.Fatal(err)
	}
	r := orchestrator.NewReconciler(o, time.Hour)
	r.Versioned = true
	rep := r.Reconcile(ctx)
	if len(rep.Errors) > 0 || rep.Objects != 2 || rep.Missing != 1 {
		t.Fatalf("report %+v, want 2 objects, 1 missing", rep)
	}
}

// TestLostEventsOfOlderVersionsEndSuperseded: when the events of several
// versions of one key are lost (a crash between the uploads and their
// events), the latest gets a job and each older one a superseded record:
// every version ends in exactly one terminal record.
func TestLostEventsOfOlderVersionsEndSuperseded(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	b.input = b.srv.VersionedBucket(t, "input")
	o, err := orchestrator.New(orchestrator.Config{InputBucket: b.input}, b.srv.Client, b.store, b.disp)
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, body := range []string{"v1", "v2", "v3"} {
		out, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.input, Key: aws.String("k"), Body: bytes.NewReader([]byte(body))})
		if err != nil || aws.ToString(out.VersionId) == "" {
			t.Fatalf("put %s: version %q, %v", body, aws.ToString(out.VersionId), err)
		}
		versions = append(versions, aws.ToString(out.VersionId))
	}
	r := orchestrator.NewReconciler(o, time.Hour)
	r.Versioned = true
	rep := r.Reconcile(ctx)
	if len(rep.Errors) > 0 || rep.Missing != 1 || rep.Superseded != 2 {
		t.Fatalf("report %+v, want 1 missing, 2 superseded", rep)
	}
	for i, v := range versions {
		rec, _, err := b.store.Get(ctx, job.ID(b.input, "k", job.Revision(v, "")))
		if err != nil {
			t.Fatalf("version %d: %v", i+1, err)
		}
		want := job.Superseded
		if i == len(versions)-1 {
			want = job.Queued
		}
		if rec.State != want {
			t.Errorf("version %d: %s, want %s", i+1, rec.State, want)
		}
	}
	if d := b.disp.Dispatched(); len(d) != 1 {
		t.Fatalf("dispatched %v, want only the latest version's job", d)
	}
	// A second pass changes nothing.
	if rep := r.Reconcile(ctx); rep.Missing != 0 || rep.Superseded != 0 {
		t.Fatalf("second pass: %+v", rep)
	}
}
