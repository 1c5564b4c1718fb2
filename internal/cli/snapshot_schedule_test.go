package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
	snaplocal "github.com/conveyorhq/conveyor/internal/snapshot/local"
)

func TestPruneDue(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		since     time.Duration
		forgotten int
		want      bool
	}{
		{time.Hour, 0, false},
		{time.Hour, pruneAfterForgotten - 1, false},
		{time.Hour, pruneAfterForgotten, true},
		{24 * time.Hour, 0, true},
		{25 * time.Hour, 3, true},
	} {
		if got := pruneDue(t0, t0.Add(tc.since), tc.forgotten, 24*time.Hour); got != tc.want {
			t.Errorf("pruneDue(%s since, %d forgotten) = %v, want %v", tc.since, tc.forgotten, got, tc.want)
		}
	}
}

// A scheduled run applies retention every time, prunes only when due, and
// remembers a failure for the dashboard.
func TestSnapshotRuns(t *testing.T) {
	srv := s3test.Start(t)
	vol := filepath.Join(t.TempDir(), "volume")
	os.MkdirAll(vol, 0o755)
	var c FileConfig
	c.Snapshot.Retention.KeepLast = 1
	runs := newSnapshotRuns(c)
	r, err := snaplocal.Open(context.Background(), srv.Client, snaplocal.Config{Bucket: srv.Bucket(t, "runs"), Source: vol, Key: snaplocal.NewPassword("test")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var logged []string
	logf := func(f string, a ...any) { logged = append(logged, f) }
	for i := 0; i < 3; i++ {
		os.WriteFile(filepath.Join(vol, "f"), []byte(strings.Repeat("x", i+1)), 0o644)
		if err := runs.run(ctx, r, nil, logf); err != nil {
			t.Fatal(err)
		}
	}
	if list, _ := r.List(ctx); len(list) != 1 {
		t.Fatalf("%d snapshots after retention, want 1", len(list))
	}
	for _, l := range logged {
		if strings.HasPrefix(l, "prune") {
			t.Fatalf("pruned before due: %q", logged)
		}
	}
	if runs.forgotten != 2 || !strings.Contains(runs.status(), "last run at") {
		t.Fatalf("forgotten %d, status %q", runs.forgotten, runs.status())
	}
	runs.lastPrune = time.Now().Add(-25 * time.Hour)
	logged = nil
	if err := runs.run(ctx, r, nil, logf); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(logged[len(logged)-1], "prune") || runs.forgotten != 0 {
		t.Fatalf("no prune once due: %q", logged)
	}
	// A failure shows on the panel.
	os.RemoveAll(vol)
	if err := runs.run(ctx, r, nil, logf); err == nil {
		t.Fatal("a snapshot of a missing volume succeeded")
	}
	panel := &snapshotPanel{cfg: c, runs: runs}
	if st := panel.Schedule(); !strings.Contains(st, "FAILED") || !strings.Contains(st, vol) {
		t.Fatalf("panel schedule %q does not show the failure", st)
	}
}
