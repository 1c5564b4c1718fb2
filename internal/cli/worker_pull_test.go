package cli

import (
	"context"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// A worker whose slot freed up takes a job that is queued with no
// dispatch on its way (held when every slot was taken, or handed back),
// never one whose command is on its way, a running one, or one skipped.
func TestNextHeld(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	store := jobstore.New(srv.Client, srv.Bucket(t, "state"))
	ctx := context.Background()
	now := time.Now()
	mk := func(key string, change func(*job.Record)) string {
		r := job.New("input", key, "v1", "etag", 1, 3, now)
		r.Dispatched(now, "cmd-1")
		if change != nil {
			change(r)
		}
		if err := store.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	mk("on-its-way", nil)
	mk("running", func(r *job.Record) {
		if err := r.Claim("vol/1", "tok", now, time.Minute, true); err != nil {
			t.Fatal(err)
		}
	})
	held := mk("held", func(r *job.Record) { r.CommandID = ""; r.Held(now) })

	got, err := nextHeld(ctx, store, map[string]bool{})
	if err != nil || got != held {
		t.Fatalf("nextHeld = %q, %v; want the held job %s", got, err, held)
	}
	if got, err := nextHeld(ctx, store, map[string]bool{held: true}); err != nil || got != "" {
		t.Errorf("nextHeld skipping it = %q, %v; want none", got, err)
	}
}
