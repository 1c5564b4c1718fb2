package orchestrator_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// changes records what OnChange reported: "<key> <state>".
type changes struct {
	mu  sync.Mutex
	got []string
}

func (c *changes) hook(r *job.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, r.Key+" "+string(r.State))
}

func (c *changes) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

func TestOnChangeReportsCreatedSupersededAndUndelivered(t *testing.T) {
	t.Parallel()
	_, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	b.input = b.srv.VersionedBucket(t, "input")
	o, err := orchestrator.New(orchestrator.Config{InputBucket: b.input}, b.srv.Client, b.store, b.disp)
	if err != nil {
		t.Fatal(err)
	}
	var ch changes
	o.OnChange = ch.hook

	// An event: created. Its duplicate: no change.
	ev := put(t, b, "evented", "x")
	o.HandleEvent(ctx, ev)
	o.HandleEvent(ctx, ev)
	// Two versions whose events were lost: the older superseded, the
	// newer created, by the sweep.
	for _, body := range []string{"v1", "v2"} {
		if _, err := b.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.input, Key: aws.String("lost"), Body: bytes.NewReader([]byte(body))}); err != nil {
			t.Fatal(err)
		}
	}
	r := orchestrator.NewReconciler(o, time.Hour)
	r.Versioned = true
	r.RedispatchAfter = 0
	r.MaxUndelivered = 2
	r.Reconcile(ctx) // sweep; "evented" sent again (2 dispatches)
	want := []string{"evented queued", "lost queued", "lost superseded"}
	if diff := cmp.Diff(want, ch.list(), sortStrings); diff != "" {
		t.Fatalf("changes after the sweep (-want +got):\n%s", diff)
	}
	// Dispatched twice, never claimed: both queued jobs end dead.
	r.Reconcile(ctx)
	r.Reconcile(ctx)
	want = append(want, "evented dead", "lost dead")
	if diff := cmp.Diff(want, ch.list(), sortStrings); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

var sortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })
