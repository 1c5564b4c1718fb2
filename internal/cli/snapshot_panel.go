package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/conveyorhq/conveyor/internal/dashboard"
	"github.com/conveyorhq/conveyor/internal/local"
	snaplocal "github.com/conveyorhq/conveyor/internal/snapshot/local"
)

// snapshotPanel shows the local snapshot repository on the dashboard. The
// pipeline is set once it has started: the dashboard starts with it, and
// the repository is reached through the pipeline's own S3 client.
type snapshotPanel struct {
	cfg  FileConfig
	pipe atomic.Pointer[local.Pipeline]
	// runs is shared with the schedule: how the last run went.
	runs *snapshotRuns
}

var _ dashboard.Snapshots = (*snapshotPanel)(nil)

func (s *snapshotPanel) repo(ctx context.Context) (*snaplocal.Repo, error) {
	p := s.pipe.Load()
	if p == nil {
		return nil, errors.New("the pipeline is still starting")
	}
	cfg, err := s.cfg.snapshotRepoConfig()
	if err != nil {
		return nil, err
	}
	return snaplocal.Open(ctx, snapshotStore(p.Server, p.S3, cfg), cfg)
}

// List implements dashboard.Snapshots.
func (s *snapshotPanel) List(ctx context.Context) ([]dashboard.SnapshotInfo, error) {
	r, err := s.repo(ctx)
	if err != nil {
		return nil, err
	}
	snaps, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]dashboard.SnapshotInfo, 0, len(snaps))
	for i := len(snaps) - 1; i >= 0; i-- { // newest first
		sn := snaps[i]
		out = append(out, dashboard.SnapshotInfo{ID: sn.ID, CreatedAt: sn.Time, Size: sn.Stats.Bytes, Added: sn.Stats.BytesAdded,
			Note: fmt.Sprintf("%d files", sn.Stats.Files)})
	}
	return out, nil
}

// Create implements dashboard.Snapshots: the same as a scheduled snapshot,
// retention included.
func (s *snapshotPanel) Create(ctx context.Context) error {
	r, err := s.repo(ctx)
	if err != nil {
		return err
	}
	return s.runs.run(ctx, r, s.pipe.Load(), func(string, ...any) {})
}

// Schedule implements dashboard.Snapshots. It ends with how the last run
// went, so that a failing schedule shows on the panel.
func (s *snapshotPanel) Schedule() string {
	sched := s.cfg.snapshotSchedule()
	text := "off (set snapshot.every or snapshot.daily)"
	if !sched.Off() {
		text = "every " + scheduleText(sched)
	}
	if st := s.runs.status(); st != "" {
		text += "; " + st
	}
	return text
}

// Retention implements dashboard.Snapshots.
func (s *snapshotPanel) Retention() string {
	p := s.cfg.snapshotPolicy()
	var parts []string
	if p.KeepLast > 0 {
		parts = append(parts, fmt.Sprintf("last %d", p.KeepLast))
	}
	if p.KeepWithin > 0 {
		parts = append(parts, "all within "+p.KeepWithin.String())
	}
	for _, b := range []struct {
		n    int
		name string
	}{{p.KeepHourly, "hourly"}, {p.KeepDaily, "daily"}, {p.KeepWeekly, "weekly"}, {p.KeepMonthly, "monthly"}, {p.KeepYearly, "yearly"}} {
		if b.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", b.n, b.name))
		}
	}
	if len(parts) == 0 {
		return "keep everything"
	}
	return "keep " + strings.Join(parts, ", ")
}
