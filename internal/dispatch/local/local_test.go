package local

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
)

// recorder is a RunFunc that remembers what it ran.
type recorder struct {
	mu   sync.Mutex
	ids  []string
	cond *sync.Cond
}

func newRecorder() *recorder {
	r := &recorder{}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *recorder) run(_ context.Context, id string) error {
	r.mu.Lock()
	r.ids = append(r.ids, id)
	r.cond.Broadcast()
	r.mu.Unlock()
	return nil
}

func (r *recorder) delivered(n int, bound time.Duration) []string {
	deadline := time.AfterFunc(bound, func() { r.mu.Lock(); r.cond.Broadcast(); r.mu.Unlock() })
	defer deadline.Stop()
	end := time.Now().Add(bound)
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.ids) < n && time.Now().Before(end) {
		r.cond.Wait()
	}
	return append([]string(nil), r.ids...)
}

func TestConformance(t *testing.T) {
	dispatchtest.Run(t, func(t *testing.T) dispatchtest.Harness {
		rec := newRecorder()
		d := New(rec.run, Config{Workers: 2})
		t.Cleanup(func() { d.Close() })
		return dispatchtest.Harness{Dispatcher: d, Delivered: rec.delivered}
	})
}

// The pool never runs more jobs at once than it has workers, and a job
// dispatched while queued or running is not run twice.
func TestBoundedAndCoalesced(t *testing.T) {
	t.Parallel()
	var running, peak, runs atomic.Int32
	release := make(chan struct{})
	started := make(chan string, 100)
	d := New(func(ctx context.Context, id string) error {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		runs.Add(1)
		started <- id
		<-release
		running.Add(-1)
		return nil
	}, Config{Workers: 3})
	defer d.Close()
	for i := 0; i < 10; i++ {
		d.Dispatch(context.Background(), dispatchtest.ID(i))
	}
	for i := 0; i < 3; i++ {
		<-started
	}
	// Duplicates of running and queued jobs.
	for i := 0; i < 10; i++ {
		d.Dispatch(context.Background(), dispatchtest.ID(i))
	}
	if got := d.Pending(); got != 10 {
		t.Fatalf("Pending = %d, want 10 (duplicates coalesced)", got)
	}
	close(release)
	for i := 0; i < 7; i++ {
		<-started
	}
	d.Close()
	if peak.Load() > 3 {
		t.Fatalf("%d jobs ran at once with 3 workers", peak.Load())
	}
	if runs.Load() != 10 {
		t.Fatalf("%d runs for 10 distinct jobs", runs.Load())
	}
}
