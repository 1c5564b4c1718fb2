package jobstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

func setup(t testing.TB) *jobstore.Store {
	srv := s3test.Start(t)
	return jobstore.New(srv.Client, srv.Bucket(t, "state"))
}

func newRecord(n int) *job.Record {
	return job.New("input", fmt.Sprintf("key-%d", n), "", fmt.Sprintf("etag-%d", n), 10, 3, time.Now())
}

func TestCreateOnce(t *testing.T) {
	t.Parallel()
	s := setup(t)
	rec := newRecord(1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, exists := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Create(context.Background(), newRecord(1))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, jobstore.ErrExists):
				exists++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if created != 1 || exists != 7 {
		t.Fatalf("8 concurrent creates: %d created, %d ErrExists; want 1 and 7", created, exists)
	}
	got, etag, err := s.Get(context.Background(), rec.ID)
	if err != nil || got.Key != rec.Key || etag == "" {
		t.Fatalf("Get: %+v %q %v", got, etag, err)
	}
}

func TestGetMissingAndInvalid(t *testing.T) {
	t.Parallel()
	s := setup(t)
	if _, _, err := s.Get(context.Background(), newRecord(2).ID); !errors.Is(err, jobstore.ErrNotFound) {
		t.Errorf("missing record: %v", err)
	}
	if _, _, err := s.Get(context.Background(), "../../x"); !errors.Is(err, job.ErrInvalidID) {
		t.Errorf("invalid id: %v", err)
	}
}

// Concurrent updates never lose one another's changes.
func TestUpdateIsCompareAndSwap(t *testing.T) {
	t.Parallel()
	s := setup(t)
	rec := newRecord(3)
	if err := s.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	const n = 10
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Update(context.Background(), rec.ID, func(r *job.Record) error { r.Attempt++; return nil })
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _, _ := s.Get(context.Background(), rec.ID)
	if got.Attempt != n {
		t.Fatalf("after %d concurrent increments Attempt = %d: updates were lost", n, got.Attempt)
	}
	// ErrStop writes nothing; other errors are returned.
	_, etag1, _ := s.Get(context.Background(), rec.ID)
	if _, err := s.Update(context.Background(), rec.ID, func(r *job.Record) error { r.Attempt = 99; return jobstore.ErrStop }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := s.Update(context.Background(), rec.ID, func(r *job.Record) error { r.Attempt = 99; return boom }); !errors.Is(err, boom) {
		t.Fatalf("change error not returned: %v", err)
	}
	if got, etag2, _ := s.Get(context.Background(), rec.ID); etag1 != etag2 || got.Attempt != n {
		t.Fatal("an update that stopped or failed wrote the record")
	}
}

func TestListAndIDs(t *testing.T) {
	t.Parallel()
	s := setup(t)
	want := map[string]bool{}
	for i := 0; i < 5; i++ {
		r := newRecord(100 + i)
		want[r.ID] = true
		if err := s.Create(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := s.List(context.Background())
	if err != nil || len(recs) != 5 {
		t.Fatalf("List: %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if !want[r.ID] {
			t.Errorf("unexpected record %s", r.ID)
		}
	}
}

// BenchmarkUpdate measures one record compare-and-swap (GET + conditional
// PUT) against the embedded server on loopback: the unit cost of every job
// state change.
func BenchmarkUpdate(b *testing.B) {
	s := setup(b)
	rec := newRecord(7)
	if err := s.Create(context.Background(), rec); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Update(context.Background(), rec.ID, func(r *job.Record) error { r.Attempt++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreate(b *testing.B) {
	s := setup(b)
	for i := 0; i < b.N; i++ {
		if err := s.Create(context.Background(), newRecord(1000+i)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s := setup(b)
	rec := newRecord(8)
	s.Create(context.Background(), rec)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.Get(context.Background(), rec.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUpdateFromAKnownRecord: a write from the record and ETag the caller
// holds needs no read; when someone wrote since, the ETag no longer
// matches and the update reads the record and applies the change to it.
func TestUpdateFromAKnownRecord(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	s := jobstore.New(srv.Client, srv.Bucket(t, "state"))
	ctx := context.Background()
	rec := job.New("in", "k", "v1", "e", 1, 3, time.Now())
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, etag, err := s.UpdateFrom(ctx, rec.ID, nil, "", func(r *job.Record) error { r.Size = 2; return nil })
	if err != nil || etag == "" {
		t.Fatalf("update: %v, etag %q", err, etag)
	}
	got2, etag2, err := s.UpdateFrom(ctx, rec.ID, got, etag, func(r *job.Record) error { r.Size++; return nil })
	if err != nil || got2.Size != 3 || etag2 == etag {
		t.Fatalf("update from the known record: %+v, %v", got2, err)
	}
	// Someone else writes; the stale known record must not win.
	if _, err := s.Update(ctx, rec.ID, func(r *job.Record) error { r.Size = 100; return nil }); err != nil {
		t.Fatal(err)
	}
	got3, _, err := s.UpdateFrom(ctx, rec.ID, got2, etag2, func(r *job.Record) error { r.Size++; return nil })
	if err != nil || got3.Size != 101 {
		t.Fatalf("update from a stale record: size %d, %v; want 101 (the change applied to the current record)", got3.Size, err)
	}
	if got2.Size != 3 {
		t.Fatal("UpdateFrom modified the record it was given")
	}
}

// TestDoneMarkersListNewestFirstAcrossHours: done markers sort newest
// first across their hour folders, and DoneBefore starts exactly at the
// first job finished before a time, in the same hour or an older one.
func TestDoneMarkersListNewestFirstAcrossHours(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC)
	offsets := []time.Duration{-3 * time.Hour, -61 * time.Minute, -20 * time.Minute, -time.Minute, 0, time.Minute, 29 * time.Minute, 2 * time.Hour}
	var all []string
	for i, off := range offsets {
		at := base.Add(off)
		r := job.New("in", fmt.Sprintf("k%d", i), "v", "e", 1, 1, at)
		r.State, r.FinishedAt, r.UpdatedAt = job.Succeeded, &at, at
		if err := s.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		all = append([]string{r.ID}, all...) // newest first
	}
	list := func(after string) []string {
		var ids []string
		if err := s.Done(ctx, job.Succeeded, after, 2, func(e jobstore.DoneEntry) error { ids = append(ids, e.ID); return nil }); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := list(""); !slices.Equal(got, all) {
		t.Fatalf("newest first: %v, want %v", got, all)
	}
	// Before base: the four older ones (offsets -3h, -61m, -20m, -1m).
	if got := list(jobstore.DoneBefore(job.Succeeded, base)); !slices.Equal(got, all[4:]) {
		t.Fatalf("finished before %s: %v, want %v", base, got, all[4:])
	}
}
