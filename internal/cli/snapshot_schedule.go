package cli

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/snapshot"
	snaplocal "github.com/conveyorhq/conveyor/internal/snapshot/local"
)

func controlSocket(c FileConfig) string {
	return local.Paths{Root: c.DataDir}.ControlSocket()
}

// snapshotValidate checks the snapshot section.
func (c FileConfig) snapshotValidate() error {
	if err := c.snapshotSchedule().Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	if err := c.snapshotPolicy().Validate(); err != nil {
		return usageErrorf("snapshot.%v", err)
	}
	return nil
}

func (c FileConfig) snapshotSchedule() snapshot.Schedule {
	return snapshot.Schedule{Every: c.Snapshot.Every, Daily: c.Snapshot.Daily}
}

func (c FileConfig) snapshotPolicy() snapshot.Policy {
	r := c.Snapshot.Retention
	return snapshot.Policy{KeepLast: r.KeepLast, KeepWithin: r.KeepWithin, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly, KeepTags: r.KeepTags}
}

func (c FileConfig) snapshotBucket() string {
	if c.Snapshot.Bucket != "" {
		return c.Snapshot.Bucket
	}
	return c.Buckets.State
}

// snapshotRepoConfig is the local snapshot repository's configuration,
// its password included.
func (c FileConfig) snapshotRepoConfig() (snaplocal.Config, error) {
	key, err := c.snapshotKey()
	if err != nil {
		return snaplocal.Config{}, err
	}
	return snaplocal.Config{Bucket: c.snapshotBucket(), Prefix: c.Snapshot.Prefix, Source: c.volumePath(), Key: key}, nil
}

// startSnapshotSchedule runs the configured snapshot schedule inside
// `conveyor up`: at each due time a snapshot (quiesced when
// snapshot.quiesce is set) and the retention policy, and a prune when due
// (see snapshotRuns). Off when no schedule is set.
func startSnapshotSchedule(ctx context.Context, g *globals, c FileConfig, p *local.Pipeline, runs *snapshotRuns) (stop func(), err error) {
	sched := c.snapshotSchedule()
	if sched.Off() {
		return func() {}, nil
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(g.Err, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	cfg, err := c.snapshotRepoConfig()
	if err != nil {
		return nil, err
	}
	cfg.Logf = logf
	s := &snapshot.Scheduler{
		Schedule: sched,
		Run: func(ctx context.Context) (err error) {
			start := time.Now()
			defer func() { p.Metrics().SnapshotRun(time.Since(start), err) }()
			r, err := snaplocal.Open(ctx, snapshotStore(p.Server, p.S3, cfg), cfg)
			if err != nil {
				return err
			}
			return runs.run(ctx, r, p, logf)
		},
		OnRun: func(_ time.Time, err error) {
			if err != nil {
				logf("scheduled snapshot FAILED: %v (the dashboard's snapshot panel shows it until a run succeeds)", err)
			}
		},
	}
	if err := s.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, usageErrorf("%v", err)
	}
	next := sched.Next(time.Now())
	logf("snapshots of %s every %s, next at %s", c.volumePath(), scheduleText(sched), next.Format("2006-01-02 15:04"))
	return s.Stop, nil
}

func scheduleText(s snapshot.Schedule) string {
	if s.Every > 0 {
		return s.Every.String()
	}
	return "day at " + s.Daily
}

// Defaults of the scheduled prune.
const (
	defaultPruneEvery = 24 * time.Hour
	// pruneAfterForgotten: a scheduled run prunes once retention has
	// removed this many snapshots since the last prune.
	pruneAfterForgotten = 10
)

// snapshotRuns runs scheduled snapshots (and the dashboard's "snapshot
// now"): a snapshot, then retention (Forget, cheap) every time, and a
// prune only when pruneDue says so. It remembers how the last run went,
// for the dashboard's snapshot panel.
type snapshotRuns struct {
	cfg FileConfig
	now func() time.Time

	mu        sync.Mutex
	lastPrune time.Time // the start of the process counts as one
	forgotten int       // snapshots removed since the last prune
	lastAt    time.Time
	lastErr   error
	lastID    string
}

func newSnapshotRuns(c FileConfig) *snapshotRuns {
	return &snapshotRuns{cfg: c, now: time.Now, lastPrune: time.Now()}
}

// pruneDue: prune once every period, or sooner when retention has
// removed many snapshots since the last prune.
func pruneDue(last, now time.Time, forgotten int, every time.Duration) bool {
	return now.Sub(last) >= every || forgotten >= pruneAfterForgotten
}

// status is one line for the dashboard: how the last run went.
func (sr *snapshotRuns) status() string {
	if sr == nil {
		return ""
	}
	sr.mu.Lock()
	defer sr.mu.Unlock()
	switch {
	case sr.lastAt.IsZero():
		return ""
	case sr.lastErr != nil:
		return fmt.Sprintf("last run at %s FAILED: %v", sr.lastAt.Format("2006-01-02 15:04"), sr.lastErr)
	default:
		return fmt.Sprintf("last run at %s: snapshot %s", sr.lastAt.Format("2006-01-02 15:04"), sr.lastID)
	}
}

func (sr *snapshotRuns) run(ctx context.Context, r *snaplocal.Repo, p *local.Pipeline, logf func(string, ...any)) error {
	at := sr.now()
	id, err := sr.runOnce(ctx, r, p, logf)
	sr.mu.Lock()
	sr.lastAt, sr.lastErr = at, err
	if id != "" {
		sr.lastID = id
	}
	sr.mu.Unlock()
	return err
}

func (sr *snapshotRuns) runOnce(ctx context.Context, r *snaplocal.Repo, p *local.Pipeline, logf func(string, ...any)) (string, error) {
	c := sr.cfg
	create := func() (snapshot.Snapshot, error) {
		if c.Snapshot.Quiesce && p != nil {
			resume, err := p.Quiesce(ctx, 5*time.Minute)
			if err != nil {
				return snapshot.Snapshot{}, fmt.Errorf("quiesce: %w", err)
			}
			defer resume()
		}
		return r.Create(ctx, snapshot.CreateOptions{})
	}
	s, err := create()
	if err != nil {
		return "", err
	}
	logf("snapshot %s: %d files, %s, %s added", s.ID, s.Stats.Files, humanBytes(s.Stats.Bytes), humanBytes(s.Stats.BytesAdded))
	removed, err := r.Forget(ctx, c.snapshotPolicy())
	if err != nil {
		return s.ID, fmt.Errorf("retention after snapshot %s: %w", s.ID, err)
	}
	if len(removed) > 0 {
		logf("retention removed %d snapshot(s)", len(removed))
	}
	every := c.Snapshot.PruneEvery
	if every <= 0 {
		every = defaultPruneEvery
	}
	sr.mu.Lock()
	sr.forgotten += len(removed)
	due := pruneDue(sr.lastPrune, sr.now(), sr.forgotten, every)
	sr.mu.Unlock()
	if !due {
		return s.ID, nil
	}
	rep, err := r.Prune(ctx, c.snapshotPolicy())
	if err != nil {
		return s.ID, fmt.Errorf("prune after snapshot %s: %w", s.ID, err)
	}
	sr.mu.Lock()
	sr.lastPrune, sr.forgotten = sr.now(), 0
	sr.mu.Unlock()
	logf("prune: deleted %d pack(s), freed %s; repository now %s", rep.PacksDeleted, humanBytes(rep.BytesFreed), humanBytes(rep.RepositoryBytes))
	return s.ID, nil
}
