package cli

import (
	"context"
	"fmt"
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
	return snapshot.Policy{KeepLast: r.KeepLast, KeepWithin: r.KeepWithin, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly}
}

func (c FileConfig) snapshotBucket() string {
	if c.Snapshot.Bucket != "" {
		return c.Snapshot.Bucket
	}
	return c.Buckets.State
}

func (c FileConfig) snapshotRepoConfig() snaplocal.Config {
	return snaplocal.Config{Bucket: c.snapshotBucket(), Prefix: c.Snapshot.Prefix, Source: c.volumePath()}
}

// startSnapshotSchedule runs the configured snapshot schedule inside
// `conveyor up`: a snapshot (quiesced when snapshot.quiesce is set), then
// the retention policy, at each due time. Off when no schedule is set.
func startSnapshotSchedule(ctx context.Context, g *globals, c FileConfig, p *local.Pipeline) (stop func(), err error) {
	sched := c.snapshotSchedule()
	if sched.Off() {
		return func() {}, nil
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(g.Err, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	cfg := c.snapshotRepoConfig()
	cfg.Logf = logf
	s := &snapshot.Scheduler{
		Schedule: sched,
		Run: func(ctx context.Context) error {
			r, err := snaplocal.Open(ctx, p.S3, cfg)
			if err != nil {
				return err
			}
			return scheduledSnapshot(ctx, r, c, p, logf)
		},
		OnRun: func(_ time.Time, err error) {
			if err != nil {
				logf("scheduled snapshot: %v", err)
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

func scheduledSnapshot(ctx context.Context, r *snaplocal.Repo, c FileConfig, p *local.Pipeline, logf func(string, ...any)) error {
	create := func() (snapshot.Snapshot, error) {
		if c.Snapshot.Quiesce {
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
		return err
	}
	logf("snapshot %s: %d files, %s, %s added", s.ID, s.Stats.Files, humanBytes(s.Stats.Bytes), humanBytes(s.Stats.BytesAdded))
	rep, err := r.Prune(ctx, c.snapshotPolicy())
	if err != nil {
		return fmt.Errorf("retention after snapshot %s: %w", s.ID, err)
	}
	if len(rep.Removed) > 0 {
		logf("retention removed %d snapshot(s), freed %s", len(rep.Removed), humanBytes(rep.BytesFreed))
	}
	return nil
}
