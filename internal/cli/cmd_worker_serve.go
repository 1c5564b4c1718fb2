package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/natsworker"
)

type workerServeOptions struct {
	workerRunOptions
	nats string
}

func newWorkerServeCommand(g *globals) *cobra.Command {
	o := &workerServeOptions{workerRunOptions: workerRunOptions{globals: g}}
	cmd := &cobra.Command{
		Use:   "serve --nats URL",
		Short: "Run jobs from a NATS JetStream queue until stopped (a worker on any machine)",
		Long: `Run as a long-lived worker on any machine: pull job IDs from the NATS
JetStream work queue that 'conveyor up --nats' (or any orchestrator with
cluster.nats) publishes to, and run each exactly as 'conveyor worker run'
does, up to 'workers' jobs at once (the volume's job slots). A job's message
is acknowledged once its outcome is in the job record; a failed attempt
comes back after its backoff; SIGTERM or Ctrl-C hands running jobs back to
other workers. A worker killed outright has its jobs taken over by another
once their lease lapses.

The worker reaches the object store as any client does (s3.endpoint and
credentials, or the 'conveyor up' on --data-dir when it runs on the same
machine). NATS credentials come from the configuration file or the
environment (CONVEYOR_CLUSTER_NATS_USER / _PASSWORD, or _CREDS), never from
the command line.

It registers on its volume like 'worker run': a drain ('worker watch')
stops it the same way, its jobs handed back. While the NATS server is
unreachable it keeps trying to reconnect and says so.

Exit codes: 0 stopped by a signal, 1 it could not start (the message says
why: the store or NATS unreachable, the volume draining), 2 bad
configuration.`,
		Example: `  CONVEYOR_CLUSTER_NATS_USER=conveyor CONVEYOR_CLUSTER_NATS_PASSWORD=... \
    conveyor worker serve --nats nats://10.0.0.5:4222 --volume /var/lib/conveyor
  conveyor worker serve --config /etc/conveyor/conveyor.yaml   # cluster.nats in the file`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runWorkerServe(cmd.Context(), o) },
	}
	cmd.Flags().StringVar(&o.nats, "nats", "", "NATS server URL(s), comma-separated (env CONVEYOR_CLUSTER_NATS; config cluster.nats)")
	cmd.Flags().StringVar(&o.volume, "volume", "", "volume directory (default <data-dir>/volume; env CONVEYOR_VOLUME)")
	return cmd
}

func runWorkerServe(ctx context.Context, o *workerServeOptions) error {
	c, err := o.config()
	if err != nil {
		return err
	}
	if o.nats != "" {
		c.Cluster.NATS = o.nats
	}
	if c.Cluster.NATS == "" {
		return usageErrorf("worker serve needs a NATS server: pass --nats nats://HOST:4222 (the URL conveyor up printed) or set cluster.nats")
	}
	c.natsLocalCredentials()
	if err := c.validateCluster(false); err != nil {
		return err
	}
	jw, err := o.prepareJobWorker(ctx, &c, o.volume)
	if err != nil {
		return err
	}
	defer jw.close()
	if jw.draining != nil {
		return fmt.Errorf("this worker's volume is draining (%v): it takes no job", jw.draining)
	}
	nc, js, err := connectNATS(ctx, c.natsConnConfig("conveyor worker serve"))
	if err != nil {
		return err
	}
	defer nc.Close()
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Err, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	lease := c.workerConfig().WithDefaults().Lease
	cons, err := natsworker.New(js, natsworker.Config{
		Stream: c.natsStreamConfig(),
		Slots:  c.Workers,
		Lease:  lease,
		Logf:   logf,
	}, func(ctx context.Context, id string) error {
		return o.runInSlot(ctx, jw.w, jw.cn.Store, jw.vol, c.Workers, id)
	})
	if err != nil {
		return usageErrorf("%v", err)
	}
	if err := cons.Start(ctx); err != nil {
		return err
	}
	sc := c.natsStreamConfig()
	fmt.Fprintf(o.Out, "conveyor worker serve: pulling jobs from NATS stream %s (%s) at %s, %d job slot(s), volume %s (owner %s)\n",
		sc.Stream, sc.Filter(), nc.ConnectedUrlRedacted(), c.Workers, c.volumePath(), jw.w.Owner())
	<-ctx.Done()
	fmt.Fprintln(o.Out, "conveyor worker serve: stopping; running jobs are handed back to other workers")
	cons.Stop()
	return nil
}
