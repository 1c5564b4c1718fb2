package local

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// putLock writes a lock object as another process would.
func putLock(t *testing.T, r *Repo, name string, li lockInfo) {
	t.Helper()
	b, _ := json.Marshal(li)
	if err := r.put(context.Background(), name, b, false); err != nil {
		t.Fatal(err)
	}
}

// flaky is an HTTP transport that fails the requests fail selects.
type flaky struct {
	next http.RoundTripper
	fail atomic.Pointer[func(*http.Request) bool]
}

func (f *flaky) RoundTrip(req *http.Request) (*http.Response, error) {
	if fn := f.fail.Load(); fn != nil && (*fn)(req) {
		return nil, errors.New("flaky: connection refused")
	}
	return f.next.RoundTrip(req)
}

// failLockWrites makes every write of a lock object fail.
func (f *flaky) failLockWrites() {
	fn := func(req *http.Request) bool {
		return req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/locks/")
	}
	f.fail.Store(&fn)
}

// openFast opens a second handle on b's repository with short lock times
// and a client whose transport fails on demand.
func openFast(t *testing.T, b bundle, stale, refresh time.Duration) (*Repo, *flaky) {
	t.Helper()
	fl := &flaky{next: http.DefaultTransport}
	client := s3.New(b.srv.Client.Options(), func(o *s3.Options) {
		o.HTTPClient = &http.Client{Transport: fl}
		o.RetryMaxAttempts = 1
	})
	r, err := Open(context.Background(), client, Config{Bucket: b.bucket, Source: b.src, PackSize: 1 << 20, StaleLock: stale, LockRefresh: refresh, Key: testKey()})
	if err != nil {
		t.Fatal(err)
	}
	return r, fl
}

// A create that cannot refresh its lock stops before writing its index or
// its snapshot, and says why.
func TestRefreshFailureFences(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	r, fl := openFast(t, b, 2*time.Second, 500*time.Millisecond)
	writeFile(t, filepath.Join(b.src, "big.bin"), randBytes(rand.New(rand.NewSource(1)), 2<<20), 0o644, time.Unix(1e9, 0))
	lost := make(chan struct{})
	r.onLockLost = func(string) { close(lost) }
	r.onChunk = func(string, int64) {
		fl.failLockWrites()
		<-lost
	}
	_, err := r.Create(context.Background(), snapshot.CreateOptions{})
	if !errors.Is(err, snapshot.ErrLockLost) {
		t.Fatalf("create: %v, want ErrLockLost", err)
	}
	ctx := context.Background()
	for _, dir := range []string{"snapshots/", "index/"} {
		if objs, _ := r.list(ctx, dir); len(objs) != 0 {
			t.Errorf("%s holds %d object(s) after a fenced create, want none", dir, len(objs))
		}
	}
}

// A create paused past the stale time while a prune runs: the prune takes
// its lock as stale and deletes the packs only a removed snapshot used;
// the create, resumed, fails without writing a snapshot that would point
// at them, and every kept snapshot stays whole.
func TestCreatePausedWhilePrune(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	rng := rand.New(rand.NewSource(5))
	writeFile(t, filepath.Join(b.src, "kept.bin"), randBytes(rng, 1<<20), 0o644, time.Unix(1e9, 0))
	kept, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.src, "gone.bin"), randBytes(rng, 2<<20), 0o644, time.Unix(1e9, 0))
	doomed, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The paused create reuses gone.bin's chunks (indexed) and stops
	// in new.bin.
	writeFile(t, filepath.Join(b.src, "new.bin"), randBytes(rng, 2<<20), 0o644, time.Unix(1e9, 0))
	paused, fl := openFast(t, b, 2*time.Second, 500*time.Millisecond)
	pruner, _ := openFast(t, b, 2*time.Second, 500*time.Millisecond)
	stopped, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	paused.onChunk = func(string, int64) {
		once.Do(func() {
			fl.failLockWrites() // a paused process refreshes nothing
			close(stopped)
			<-resume
		})
	}
	var createErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, createErr = paused.Create(ctx, snapshot.CreateOptions{})
	}()
	<-stopped
	if err := pruner.Delete(ctx, doomed.ID); err != nil {
		t.Fatal(err)
	}
	var rep PruneReport
	for {
		rep, err = pruner.Prune(ctx, snapshot.Policy{})
		if !errors.Is(err, snapshot.ErrLocked) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the store's clock must pass the stale time
	}
	if err != nil || rep.PacksDeleted == 0 {
		t.Fatalf("prune beside a stale create: %+v, %v; want packs deleted", rep, err)
	}
	close(resume)
	<-done
	if !errors.Is(createErr, snapshot.ErrLockLost) {
		t.Fatalf("resumed create: %v, want ErrLockLost", createErr)
	}
	list, err := r.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != kept.ID {
		t.Fatalf("snapshots after: %v %v; want only %s", list, err, kept.ID)
	}
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "r")
	if err := r.Restore(ctx, kept.ID, snapshot.RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
}

// Two prunes that write their locks at the same moment: never both
// proceed.
func TestTwoPrunesRace(t *testing.T) {
	t.Parallel()
	r1, b := setup(t)
	r2, _ := openFast(t, b, DefaultStaleLock, DefaultLockRefresh)
	ctx := context.Background()
	var barrier sync.WaitGroup
	barrier.Add(2)
	for _, r := range []*Repo{r1, r2} {
		r.onLockWritten = func(string) { barrier.Done(); barrier.Wait() }
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range []*Repo{r1, r2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.Prune(ctx, snapshot.Policy{})
		}()
	}
	wg.Wait()
	// At most one proceeds: both fail when each sees the other, one may
	// proceed when the other has already backed off and removed its lock.
	for i, err := range errs {
		if err != nil && !errors.Is(err, snapshot.ErrLocked) {
			t.Errorf("prune %d: %v", i, err)
		}
	}
	if errs[0] == nil && errs[1] == nil {
		t.Fatal("two prunes proceeded at once")
	}
	// Both removed their lock: the next prune proceeds.
	r1.onLockWritten, r2.onLockWritten = nil, nil
	if _, err := r2.Prune(ctx, snapshot.Policy{}); err != nil {
		t.Fatal(err)
	}
	if objs, _ := r1.list(ctx, "locks/"); len(objs) != 0 {
		t.Fatalf("locks left: %v", objs)
	}
}

// Staleness follows the store's clock, whatever the machines' clocks say.
// The judging process's clock is ten hours ahead; a live lock held by a
// process whose clock is ten hours behind is live; one not rewritten for
// longer than the stale time is stale though its content, from a clock
// ten hours ahead, claims a refresh in the future.
func TestStaleByStoreClock(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	r, _ := openFast(t, b, 2*time.Second, 500*time.Millisecond)
	r.clock = func() time.Time { return time.Now().Add(10 * time.Hour) }
	holder, _ := openFast(t, b, 2*time.Second, 500*time.Millisecond)
	holder.clock = func() time.Time { return time.Now().Add(-10 * time.Hour) }
	ctx := context.Background()
	ahead := time.Now().Add(10 * time.Hour)
	putLock(t, r, "locks/ahead", lockInfo{Exclusive: true, Op: "prune", Nonce: "ahead", Host: "elsewhere", PID: 1, Created: ahead, Refreshed: ahead})
	// Live: it conflicts.
	if _, err := r.lock(ctx, "create", false); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("beside a fresh lock: %v, want ErrLocked", err)
	}
	time.Sleep(2*time.Second + 2*staleSlack) // the store's clock passes the stale time
	held, err := holder.lock(ctx, "create", false)
	if err != nil {
		t.Fatalf("beside a stale exclusive lock: %v, want it removed", err)
	}
	defer held.release()
	if _, err := r.stat(ctx, "locks/ahead"); !errors.Is(err, errNoKey) {
		t.Errorf("the stale lock is still there: %v", err)
	}
	// The lock from the slow clock is refreshed and live, well past the
	// stale time: a prune must not proceed beside it.
	time.Sleep(2*time.Second + 2*staleSlack)
	if _, err := r.lock(ctx, "prune", true); !errors.Is(err, snapshot.ErrLocked) || !strings.Contains(err.Error(), "create") {
		t.Fatalf("prune beside a live lock from a slow clock: %v, want ErrLocked", err)
	}
	if err := held.check(); err != nil {
		t.Fatalf("the holder lost its lock: %v", err)
	}
}

// A lock removed by another process is never written again: its holder
// stops at the next refresh.
func TestRemovedLockNotRecreated(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	r, _ := openFast(t, b, 2*time.Second, 200*time.Millisecond)
	ctx := context.Background()
	lost := make(chan struct{})
	r.onLockLost = func(string) { close(lost) }
	l, err := r.lock(ctx, "create", false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	if err := r.del(ctx, l.name); err != nil {
		t.Fatal(err)
	}
	<-lost
	if err := l.check(); !errors.Is(err, snapshot.ErrLockLost) {
		t.Fatalf("check: %v, want ErrLockLost", err)
	}
	if _, err := r.stat(ctx, l.name); !errors.Is(err, errNoKey) {
		t.Fatalf("the removed lock was written again: %v", err)
	}
}

// A pack that no index names is kept while younger than PruneMargin by
// the store's clock (a running snapshot may be writing it), deleted after.
func TestPruneKeepsYoungUnindexedPacks(t *testing.T) {
	t.Parallel()
	r, _ := setup(t)
	ctx := context.Background()
	body := []byte("a pack a snapshot is still writing")
	name := "packs/" + hashOf(body).String()
	if err := r.put(ctx, name, body, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, snapshot.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.stat(ctx, name); err != nil {
		t.Fatalf("a young unindexed pack was deleted: %v", err)
	}
	r.cfg.PruneMargin = -time.Hour // every pack is old enough
	if rep, err := r.Prune(ctx, snapshot.Policy{}); err != nil || rep.PacksDeleted != 1 {
		t.Fatalf("prune: %+v %v, want the pack deleted", rep, err)
	}
}

// A prune whose lock is lost between its plan and its first write
// deletes nothing.
func TestPruneFencedBeforeDeleting(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	r, fl := openFast(t, b, 2*time.Second, 500*time.Millisecond)
	ctx := context.Background()
	rng := rand.New(rand.NewSource(8))
	for i := 0; i < 2; i++ {
		writeFile(t, filepath.Join(b.src, "data.bin"), randBytes(rng, 2<<20), 0o644, time.Unix(int64(1e9+i), 0))
		if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	packs, _ := r.list(ctx, "packs/")
	idx, _ := r.list(ctx, "index/")
	lost := make(chan struct{})
	r.onLockLost = func(string) { close(lost) }
	r.onPrunePlanned = func() {
		fl.failLockWrites()
		<-lost
	}
	if _, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1}); !errors.Is(err, snapshot.ErrLockLost) {
		t.Fatalf("prune: %v, want ErrLockLost", err)
	}
	fl.fail.Store(nil)
	if after, _ := r.list(ctx, "packs/"); len(after) != len(packs) {
		t.Errorf("packs %d -> %d", len(packs), len(after))
	}
	if after, _ := r.list(ctx, "index/"); len(after) != len(idx) {
		t.Errorf("index objects %d -> %d", len(idx), len(after))
	}
	if list, _ := r.List(ctx); len(list) != 2 {
		t.Errorf("%d snapshots left, want 2", len(list))
	}
}
