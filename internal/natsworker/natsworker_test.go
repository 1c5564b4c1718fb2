package natsworker_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	natsdispatch "github.com/conveyorhq/conveyor/internal/dispatch/nats"
	"github.com/conveyorhq/conveyor/internal/natsserver"
	"github.com/conveyorhq/conveyor/internal/natsworker"
	"github.com/conveyorhq/conveyor/internal/worker"
)

type bundle struct {
	js   jetstream.JetStream
	disp *natsdispatch.Dispatcher
	srv  *natsserver.Server
}

func setup(t *testing.T) bundle {
	t.Helper()
	s, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(t.TempDir(), "nats"), Addr: "127.0.0.1:0", User: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return connect(t, s.ClientURL(), s.Options()...)
}

func connect(t *testing.T, url string, opts ...natsgo.Option) bundle {
	t.Helper()
	nc, err := natsgo.Connect(url, append(opts, natsgo.MaxReconnects(-1), natsgo.ReconnectWait(100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := natsdispatch.New(context.Background(), js, natsdispatch.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return bundle{js: js, disp: d}
}

// settlements records what the consumer did with each message.
type settlements struct {
	mu  sync.Mutex
	got []string // "<id> <action>"
	ch  chan string
}

func newSettlements() *settlements { return &settlements{ch: make(chan string, 1000)} }

func (s *settlements) on(id string, _ error, action string) {
	s.mu.Lock()
	s.got = append(s.got, id+" "+action)
	s.mu.Unlock()
	s.ch <- id + " " + action
}

// next waits for the next settlement (the bound is a failure, not a
// measure).
func (s *settlements) next(t *testing.T) string {
	t.Helper()
	select {
	case v := <-s.ch:
		return v
	case <-time.After(60 * time.Second):
		t.Fatal("no message settled within 60s")
		return ""
	}
}

func start(t *testing.T, js jetstream.JetStream, slots int, run natsworker.RunFunc, st *settlements) *natsworker.Consumer {
	t.Helper()
	c, err := natsworker.New(js, natsworker.Config{Slots: slots, Lease: 3 * time.Second, StopDelay: 100 * time.Millisecond, OnSettled: st.on, Logf: t.Logf}, run)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// Every job runs once, never more at once than the slots, and is acked.
func TestRunsEveryJobWithinItsSlots(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var running, peak atomic.Int32
	runs := sync.Map{}
	run := func(ctx context.Context, id string) error {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		v, _ := runs.LoadOrStore(id, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
		time.Sleep(5 * time.Millisecond)
		return nil
	}
	st := newSettlements()
	const n, slots = 60, 3
	start(t, b.js, slots, run, st)
	for i := 0; i < n; i++ {
		if _, err := b.disp.Dispatch(context.Background(), dispatchtest.ID(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		if got := st.next(t); got[33:] != "ack" {
			t.Fatalf("settlement %q, want ack", got)
		}
	}
	if p := peak.Load(); p > slots {
		t.Fatalf("%d jobs ran at once, slots are %d", p, slots)
	}
	for i := 0; i < n; i++ {
		v, ok := runs.Load(dispatchtest.ID(i))
		if !ok || v.(*atomic.Int32).Load() != 1 {
			t.Fatalf("job %d ran %v times, want once", i, v)
		}
	}
}

// A job held by another live worker is naked, never acked away: it comes
// back and is acked once it is done. A retry the worker scheduled comes
// back after its delay; a dead job is terminated.
func TestBusyRetryAndDead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	busy, retry, dead := dispatchtest.ID(1), dispatchtest.ID(2), dispatchtest.ID(3)
	var busyRuns, retryRuns atomic.Int32
	run := func(ctx context.Context, id string) error {
		switch id {
		case busy:
			if busyRuns.Add(1) < 3 {
				return fmt.Errorf("%w: held by another worker", worker.ErrBusy)
			}
			return nil // the holder finished: the job is done
		case retry:
			if retryRuns.Add(1) == 1 {
				return &worker.RetryError{JobID: id, After: 300 * time.Millisecond, Cause: "exit 1"}
			}
			return nil
		case dead:
			return fmt.Errorf("%w: exit 1", worker.ErrDead)
		}
		return nil
	}
	st := newSettlements()
	start(t, b.js, 2, run, st)
	for _, id := range []string{busy, retry, dead} {
		if _, err := b.disp.Dispatch(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	final := map[string]string{}
	for len(final) < 3 {
		v := st.next(t)
		id, action := v[:32], v[33:]
		switch {
		case id == busy && busyRuns.Load() < 3 && action != "nak 1s":
			t.Fatalf("busy job settled %q, want nak 1s (a third of the lease)", action)
		case id == retry && retryRuns.Load() == 1 && action != "nak 300ms":
			t.Fatalf("retried job settled %q, want nak 300ms", action)
		}
		if action == "ack" || action == "term" {
			final[id] = action
		}
	}
	if final[busy] != "ack" || final[retry] != "ack" || final[dead] != "term" {
		t.Fatalf("final settlements %v", final)
	}
	if busyRuns.Load() != 3 || retryRuns.Load() != 2 {
		t.Fatalf("busy job ran %d times (want 3), retried job %d (want 2)", busyRuns.Load(), retryRuns.Load())
	}
}

// Stop hands a running job back: its run's context ends, the message is
// naked and another consumer runs it.
func TestStopHandsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started := make(chan struct{})
	first := start(t, b.js, 1, func(ctx context.Context, id string) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}, newSettlements())
	id := dispatchtest.ID(9)
	if _, err := b.disp.Dispatch(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	<-started
	first.Stop()
	st := newSettlements()
	var ran atomic.Int32
	start(t, b.js, 1, func(ctx context.Context, got string) error {
		if got == id {
			ran.Add(1)
		}
		return nil
	}, st)
	if v := st.next(t); v != id+" ack" || ran.Load() != 1 {
		t.Fatalf("second consumer settled %q after running it %d times, want the handed-back job acked once", v, ran.Load())
	}
}

// A message whose process died is redelivered after the ack deadline and
// not before: while its job runs the deadline is extended.
func TestHeartbeatKeepsTheMessage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	var runs atomic.Int32
	st := newSettlements()
	start(t, b.js, 2, func(ctx context.Context, id string) error {
		if runs.Add(1) == 1 {
			<-release // longer than the ack deadline (4.5s)
		}
		return nil
	}, st)
	id := dispatchtest.ID(4)
	if _, err := b.disp.Dispatch(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	time.Sleep(natsworker.AckWait(3*time.Second) + 2*time.Second)
	if n := runs.Load(); n != 1 {
		t.Fatalf("job ran %d times while its first run was alive and extending its deadline, want 1", n)
	}
	close(release)
	if v := st.next(t); v != id+" ack" {
		t.Fatalf("settled %q, want ack", v)
	}
}

// Pause lets the running job finish and starts none until Resume; WaitIdle
// waits for the running one (what a quiesced snapshot relies on).
func TestPauseAndWaitIdle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first, second := dispatchtest.ID(1), dispatchtest.ID(2)
	started, release := make(chan struct{}), make(chan struct{})
	var resumed atomic.Bool
	var ranWhilePaused atomic.Bool
	st := newSettlements()
	c := start(t, b.js, 1, func(ctx context.Context, id string) error {
		switch id {
		case first:
			close(started)
			<-release
		case second:
			if !resumed.Load() {
				ranWhilePaused.Store(true)
			}
		}
		return nil
	}, st)
	if _, err := b.disp.Dispatch(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	<-started
	c.Pause()
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.WaitIdle(short); err == nil {
		t.Fatal("WaitIdle returned while a job ran")
	}
	if _, err := b.disp.Dispatch(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := c.WaitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := st.next(t); v != first+" ack" {
		t.Fatalf("settled %q, want the first job acked", v)
	}
	resumed.Store(true)
	c.Resume()
	// The second job, if fetched while paused, was handed back (nak) and
	// comes again: wait for its ack.
	for v := st.next(t); v != second+" ack"; v = st.next(t) {
		if !strings.HasPrefix(v, second+" nak") {
			t.Fatalf("settled %q, want the second job acked after Resume", v)
		}
	}
	if ranWhilePaused.Load() {
		t.Fatal("a job started while the consumer was paused")
	}
}
