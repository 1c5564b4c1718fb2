package nats_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	natsdispatch "github.com/conveyorhq/conveyor/internal/dispatch/nats"
	"github.com/conveyorhq/conveyor/internal/natsserver"
)

// startServer runs a real NATS server with JetStream on a random loopback
// port and a temp store, and returns a JetStream client of it.
func startServer(t *testing.T) (*natsserver.Server, jetstream.JetStream) {
	t.Helper()
	s, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(t.TempDir(), "nats"), Addr: "127.0.0.1:0", User: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := natsgo.Connect(s.ClientURL(), s.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

// collector pulls from the stream as a worker would, acking each message.
type collector struct {
	mu   sync.Mutex
	ids  []string
	cond *sync.Cond
}

func collect(t *testing.T, js jetstream.JetStream, cfg natsdispatch.StreamConfig) *collector {
	t.Helper()
	cfg = cfg.WithDefaults()
	cons, err := js.CreateOrUpdateConsumer(context.Background(), cfg.Stream, jetstream.ConsumerConfig{
		Durable: "test", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: cfg.Filter(),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	c.cond = sync.NewCond(&c.mu)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		c.mu.Lock()
		c.ids = append(c.ids, cfg.JobID(m.Subject()))
		c.cond.Broadcast()
		c.mu.Unlock()
		m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return c
}

func (c *collector) delivered(n int, bound time.Duration) []string {
	stop := time.AfterFunc(bound, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop.Stop()
	end := time.Now().Add(bound)
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.ids) < n && time.Now().Before(end) {
		c.cond.Wait()
	}
	return append([]string(nil), c.ids...)
}

func TestConformance(t *testing.T) {
	dispatchtest.Run(t, func(t *testing.T) dispatchtest.Harness {
		_, js := startServer(t)
		d, err := natsdispatch.New(context.Background(), js, natsdispatch.StreamConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return dispatchtest.Harness{Dispatcher: d, Delivered: collect(t, js, natsdispatch.StreamConfig{}).delivered}
	})
}

// A job dispatched again while its message waits in the stream is
// coalesced; once a worker acknowledged it, a deliberate dispatch again
// (a retry of a dead job, the reconciler) is a new message, even inside
// the duplicate window.
func TestCoalescesQueuedButAcceptsAfterAck(t *testing.T) {
	t.Parallel()
	_, js := startServer(t)
	cfg := natsdispatch.StreamConfig{Stream: "JOBS", Subject: "t.jobs", Duplicates: time.Hour}
	d, err := natsdispatch.New(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id := dispatchtest.ID(7)
	ref, err := d.Dispatch(ctx, id)
	if err != nil || ref == "" {
		t.Fatalf("first Dispatch = %q, %v; want a stream reference", ref, err)
	}
	for i := 0; i < 3; i++ {
		if ref, err := d.Dispatch(ctx, id); err != nil || ref != "" {
			t.Fatalf("Dispatch of a queued job = %q, %v; want coalesced (\"\", nil)", ref, err)
		}
	}
	s, err := js.Stream(ctx, "JOBS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages after 4 dispatches of one job, want 1", info.State.Msgs)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "JOBS", jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if len(got) != 1 || string(got[0].Data()) != id {
		t.Fatalf("fetched %d messages, want the job's one", len(got))
	}
	// Held unacked by a worker: still coalesced.
	if ref, err := d.Dispatch(ctx, id); err != nil || ref != "" {
		t.Fatalf("Dispatch of a job held by a worker = %q, %v; want coalesced", ref, err)
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	ref2, err := d.Dispatch(ctx, id)
	if err != nil || ref2 == "" || ref2 == ref {
		t.Fatalf("Dispatch after the ack = %q, %v; want a new message (first was %q)", ref2, err, ref)
	}
}

// The stream is created once and updated in place: a dispatcher and a
// worker starting in any order, or a restart, keep its messages.
func TestEnsureStreamIsIdempotent(t *testing.T) {
	t.Parallel()
	_, js := startServer(t)
	ctx := context.Background()
	d, err := natsdispatch.New(ctx, js, natsdispatch.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Dispatch(ctx, dispatchtest.ID(1)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		s, err := natsdispatch.EnsureStream(ctx, js, natsdispatch.StreamConfig{Duplicates: time.Duration(i+1) * time.Minute})
		if err != nil {
			t.Fatalf("EnsureStream #%d: %v", i+1, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 1 || info.Config.Retention != jetstream.WorkQueuePolicy || info.Config.Storage != jetstream.FileStorage {
			t.Fatalf("stream after EnsureStream #%d: %d messages, retention %v, storage %v; want 1, work queue, file", i+1, info.State.Msgs, info.Config.Retention, info.Config.Storage)
		}
	}
}

// With its server gone, Dispatch says "not now" rather than hanging or
// losing the job silently.
func TestUnavailableWhenServerIsGone(t *testing.T) {
	t.Parallel()
	s, js := startServer(t)
	d, err := natsdispatch.New(context.Background(), js, natsdispatch.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := d.Dispatch(ctx, dispatchtest.ID(1)); !errors.Is(err, dispatch.ErrUnavailable) {
		t.Fatalf("Dispatch with the server down = %v, want ErrUnavailable", err)
	}
}

func TestConnConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg natsdispatch.ConnConfig
		ok  bool
	}{
		{natsdispatch.ConnConfig{URL: "nats://127.0.0.1:4222"}, true},
		{natsdispatch.ConnConfig{URL: "nats://a:4222,tls://b:4222", User: "u", Password: "p"}, true},
		{natsdispatch.ConnConfig{URL: ""}, false},
		{natsdispatch.ConnConfig{URL: "http://a:4222"}, false},
		{natsdispatch.ConnConfig{URL: "nats://u:secret@a:4222"}, false},
		{natsdispatch.ConnConfig{URL: "nats://a:4222", User: "u"}, false},
		{natsdispatch.ConnConfig{URL: "nats://a:4222", CredsFile: "x.creds", User: "u", Password: "p"}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}
