package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// TestStartupReadsAWindowAndPagesOlderJobsFromTheStore: the dashboard
// reads the jobs in flight and the newest finished ones, not the history;
// a page older than its window comes from the store's index.
func TestStartupReadsAWindowAndPagesOlderJobsFromTheStore(t *testing.T) {
	t.Parallel()
	s, b := setup(t, Config{Window: 10, PageSize: 5})
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	var ids []string // newest finished first
	for i := 0; i < 30; i++ {
		at := base.Add(time.Duration(i) * time.Minute)
		r := job.New(b.input, fmt.Sprintf("k%02d", i), "", fmt.Sprintf("e%d", i), 1, 1, at)
		r.State, r.FinishedAt, r.UpdatedAt = job.Succeeded, &at, at
		if err := b.store.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		ids = append([]string{r.ID}, ids...)
	}
	queued := job.New(b.input, "in-flight", "", "q", 1, 1, base)
	if err := b.store.Create(ctx, queued); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	<-s.Scanned()
	if p := s.index.Query(Query{Size: 100}); p.All != 11 || p.Counts[job.Queued] != 1 {
		t.Fatalf("index after start-up: %d jobs (%v), want the 1 in flight and a window of 10 finished", p.All, p.Counts)
	}
	page := func(n int) apiPage {
		w := request(s, "GET", fmt.Sprintf("/api/jobs?state=succeeded&page=%d", n), nil, nil)
		var p apiPage
		if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &p) != nil {
			t.Fatalf("page %d: %d %s", n, w.Code, w.Body)
		}
		return p
	}
	if p := page(2); p.Pages != 3 || len(p.Jobs) != 5 || p.Jobs[0].ID != ids[5] {
		t.Fatalf("last page of the window: %+v", p)
	}
	p := page(4) // jobs 16 to 20 from the newest: beyond the window
	if len(p.Jobs) != 5 || p.Pages != 5 {
		t.Fatalf("page 4: %d jobs, %d pages", len(p.Jobs), p.Pages)
	}
	for i, j := range p.Jobs {
		if j.ID != ids[15+i] {
			t.Fatalf("page 4 job %d is %s, want %s (newest first)", i, j.ID, ids[15+i])
		}
	}
}
