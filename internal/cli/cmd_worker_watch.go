package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/fleet"
	"github.com/conveyorhq/conveyor/internal/volume"
)

type workerWatchOptions struct {
	*globals
	volume       string
	group        string
	hook         string
	readyHook    string
	protect      bool
	poll         time.Duration
	drainTimeout time.Duration
	imds         string
	idleStop     time.Duration
}

func newWorkerWatchCommand(g *globals) *cobra.Command {
	o := &workerWatchOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Drain this worker when it leaves its Auto Scaling group or gets a Spot notice",
		Long: `Watch the instance metadata service (IMDSv2) for the Auto Scaling group's
target lifecycle state and for a Spot interruption notice. When the worker
is leaving service (scale-in, back to the warm pool, instance refresh, Spot
reclaim) it drains it: 'worker run' takes no new job (the jobs stay queued
for other workers), running ones are sent SIGTERM and hand their jobs back
uncounted, the job logs written since the last shipping go to
s3://<state>/logs/, and then the lifecycle action is completed so the group
may stop or terminate the instance. Back in service, the worker takes jobs
again. With --protect the instance is protected from scale-in while jobs
run; with --idle-stop D a worker with no job for D lowers the group's
desired capacity by one, so idle workers go back to the warm pool, stopped
with their volumes, down to none (the next upload brings one back). On EC2
it runs as the conveyor-watch systemd service.`,
		Example: `  conveyor worker watch --config /etc/conveyor/conveyor.yaml --volume /var/lib/conveyor`,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runWorkerWatch(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.volume, "volume", "", "volume directory (default <data-dir>/volume; env CONVEYOR_VOLUME)")
	f.StringVar(&o.group, "group", "", "Auto Scaling group name (default: the instance's aws:autoscaling:groupName tag, from IMDS)")
	f.StringVar(&o.hook, "hook", fleet.DefaultHook, "termination lifecycle hook name")
	f.StringVar(&o.readyHook, "ready-hook", "", "launch lifecycle hook to complete when the watch starts (the worker is ready)")
	f.BoolVar(&o.protect, "protect", false, "protect the instance from scale-in while jobs run")
	f.DurationVar(&o.poll, "poll", fleet.DefaultPoll, "how often to read IMDS")
	f.DurationVar(&o.drainTimeout, "drain-timeout", fleet.DefaultDrainTimeout, "longest wait for running jobs to hand back")
	f.DurationVar(&o.idleStop, "idle-stop", 0, "leave service (lower the group's desired capacity by one) after this long with no job; 0 never")
	f.StringVar(&o.imds, "imds-endpoint", "", "IMDS endpoint (default the instance's; for tests)")
	return cmd
}

func runWorkerWatch(ctx context.Context, o *workerWatchOptions) error {
	c, err := o.config()
	if err != nil {
		return err
	}
	if o.volume != "" {
		c.Volume = o.volume
		if err := absDataDir(&c); err != nil {
			return err
		}
	}
	cn, err := connect(ctx, c)
	if err != nil {
		return err
	}
	vol, err := volume.Open(c.volumePath())
	if err != nil {
		return err
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("load AWS configuration: %w", err)
	}
	if c.S3.Region != "" {
		ac.Region = c.S3.Region
	}
	log := slog.New(slog.NewTextHandler(o.Err, nil))
	w, err := fleet.New(fleet.Config{
		Poll: o.poll, DrainTimeout: o.drainTimeout, Hook: o.hook, ReadyHook: o.readyHook, Group: o.group, Protect: o.protect, IdleStop: o.idleStop,
	}, fleet.NewIMDS(o.imds), autoscaling.NewFromConfig(ac), vol, fleet.ShipLogs(cn.S3, c.Buckets.State, vol), log)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	w.Stop()
	return nil
}
