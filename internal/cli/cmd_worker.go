package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/volume"
	"github.com/conveyorhq/conveyor/internal/worker"
)

type workerRunOptions struct {
	*globals
	jobID   string
	volume  string
	pullFor time.Duration
}

func newWorkerCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Worker commands: run one job (what SSM Run Command invokes on EC2), serve jobs from NATS JetStream",
	}
	o := &workerRunOptions{globals: g}
	run := &cobra.Command{
		Use:   "run --job ID",
		Short: "Run one job end to end: fetch, process, upload, record",
		Long: `Run one job given its ID: claim its record in the state bucket, stream the
input onto the volume, run the processor, upload the outputs and record the
outcome, retrying with backoff in this process up to the attempt limit. It
needs only S3 access and the configuration; on EC2 it is what the SSM
document runs, with the volume at /var/lib/conveyor. Concurrent invocations
on one volume share its 'workers' job slots (default: one per CPU) and wait
for a free one. Once its job is done, it takes jobs that are waiting for a
free slot (every worker was busy when they were sent, or a leaving worker
handed them back) for up to --pull-for; the exit code stays its own job's.

Exit codes: 0 the job succeeded (now or before: a finished job is a no-op),
1 it could not run (the message says why), 2 bad job ID or configuration,
3 the job is dead.`,
		Example: `  conveyor worker run --job 0123456789abcdef0123456789abcdef
  conveyor worker run --job "$JOB" --config /etc/conveyor/conveyor.yaml --volume /var/lib/conveyor`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runWorker(cmd.Context(), o) },
	}
	run.Flags().StringVar(&o.jobID, "job", "", "job ID (32 hex digits)")
	run.Flags().StringVar(&o.volume, "volume", "", "volume directory (default <data-dir>/volume; env CONVEYOR_VOLUME)")
	run.Flags().DurationVar(&o.pullFor, "pull-for", DefaultPullFor, "after its job, take jobs waiting for a free slot for this long (0: none)")
	cmd.AddCommand(run, newWorkerPrepareCommand(g))
	cmd.AddCommand(newWorkerWatchCommand(g))
	cmd.AddCommand(newWorkerServeCommand(g))
	return cmd
}

func newWorkerPrepareCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "prepare",
		Short: "Make the configured processor ready: verify, unpack and set up its bundle",
		Long: `Make the configured processor ready without running a job: for a bundle
(processor.bundle), check its SHA-256, unpack it into <data-dir>/bundles/ and
run its setup unless this version's setup already succeeded on this machine.
'worker run' and 'up' do the same before they take a job; the EC2 worker's
boot script runs this so a new bundle is set up before the first job.

Exit codes: 0 ready, 1 the setup failed (the message says why), 2 bad
configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.config()
			if err != nil {
				return err
			}
			if err := c.validateComponents(); err != nil {
				return err
			}
			v, err := c.prepareProcessor(cmd.Context(), g.Err)
			if err != nil {
				return err
			}
			if _, err := processor.New(c.processorConfig()); err != nil {
				return usageErrorf("%v", err)
			}
			fmt.Fprintf(g.Out, "processor %s ready (config %s)\n", v.Processor, v.Config)
			return nil
		},
	}
}

func runWorker(ctx context.Context, o *workerRunOptions) error {
	if !job.ValidID(o.jobID) {
		return usageErrorf("--job %q is not a job ID (32 lowercase hex digits)", o.jobID)
	}
	c, err := o.config()
	if err != nil {
		return err
	}
	jw, err := o.prepareJobWorker(ctx, &c, o.volume)
	if err != nil {
		return err
	}
	defer jw.close()
	if jw.draining != nil {
		return o.refuse(ctx, jw.cn.Store, o.jobID, jw.draining)
	}
	w, cn, vol := jw.w, jw.cn, jw.vol
	first := o.runJob(ctx, w, cn.Store, vol, c.Workers, o.jobID)
	outcome := o.workerOutcome(ctx, cn, c, vol, o.jobID, first)
	if o.pullFor <= 0 || ctx.Err() != nil || errors.Is(first, volume.ErrDraining) {
		return outcome
	}
	// Its slot free again, the worker takes jobs that found every slot
	// taken (or were handed back), for a while: they need not wait for the
	// reconciler's next pass. The command's outcome stays its own job's.
	deadline := time.Now().Add(o.pullFor)
	skip := map[string]bool{o.jobID: true}
	for time.Now().Before(deadline) && ctx.Err() == nil && vol.CheckDraining() == nil {
		next, err := nextHeld(ctx, cn.Store, skip)
		if err != nil {
			fmt.Fprintf(o.Err, "%s look for held jobs: %v\n", time.Now().Format("15:04:05"), err)
			break
		}
		if next == "" {
			break
		}
		skip[next] = true
		fmt.Fprintf(o.Err, "%s job %s was waiting for a free slot: taking it\n", time.Now().Format("15:04:05"), next)
		if err := o.workerOutcome(ctx, cn, c, vol, next, o.runJob(ctx, w, cn.Store, vol, c.Workers, next)); err != nil {
			fmt.Fprintf(o.Err, "%s job %s: %v\n", time.Now().Format("15:04:05"), next, err)
		}
	}
	return outcome
}

// runJob runs one job in one of the volume's job slots. One `worker run`
// per SSM command: the volume's slots bound how many run at once on this
// machine (workers, default one per CPU). A job waiting out a retry's
// backoff gives its slot back meanwhile.
func (o *workerRunOptions) runJob(ctx context.Context, w *worker.Worker, store *jobstore.Store, vol *volume.Volume, slots int, id string) error {
	for {
		err := o.runInSlot(ctx, w, store, vol, slots, id)
		var re *worker.RetryError
		if !errors.As(err, &re) {
			return err
		}
		fmt.Fprintf(o.Err, "%s job %s: next attempt in %s; its job slot is free meanwhile\n", time.Now().Format("15:04:05"), id, re.After.Round(time.Millisecond))
		if err := sleepCtx(ctx, re.After); err != nil {
			return err
		}
	}
}

// runInSlot runs one attempt of a job in one of the volume's job slots:
// what `worker run` repeats until the job ends, and what `worker serve`
// runs for each message (a retry then goes back to the stream).
func (o *workerRunOptions) runInSlot(ctx context.Context, w *worker.Worker, store *jobstore.Store, vol *volume.Volume, slots int, id string) error {
	slot, err := vol.AcquireSlot(ctx, slots)
	if err != nil {
		return err
	}
	defer slot.Release()
	if err := vol.CheckDraining(); err != nil {
		return o.refuse(ctx, store, id, err)
	}
	return w.Run(ctx, id)
}

// refuse leaves a job this worker will not take, because it is leaving
// service: still queued, and due at once (no dispatch on its way), so a
// worker whose slot frees up or the reconciler's next pass sends it
// elsewhere rather than waiting for this command.
func (o *workerRunOptions) refuse(ctx context.Context, store *jobstore.Store, id string, cause error) error {
	_, err := store.Update(ctx, id, func(r *job.Record) error {
		if r.State != job.Queued || r.DispatchedAt == nil {
			return jobstore.ErrStop
		}
		r.Held(time.Now())
		return nil
	})
	if err != nil {
		fmt.Fprintf(o.Err, "%s job %s: could not mark it due: %v\n", time.Now().Format("15:04:05"), id, err)
	}
	return fmt.Errorf("job %s not taken: %w; it stays queued for another worker", id, cause)
}

// workerOutcome turns Run's result into the command's output and exit.
func (o *workerRunOptions) workerOutcome(ctx context.Context, cn *conn, c FileConfig, vol *volume.Volume, id string, err error) error {
	if err == nil {
		rec, _, gerr := cn.Store.Get(ctx, id)
		if gerr == nil {
			fmt.Fprintf(o.Out, "job %s %s: %d output(s) in s3://%s/\n", rec.ID, rec.State, len(rec.Outputs), c.Buckets.Output)
		}
		return nil
	}
	if errors.Is(err, worker.ErrSuperseded) {
		// Not a failure: a newer version of the input has its own job.
		fmt.Fprintf(o.Out, "job %s superseded: %v\n", id, err)
		return nil
	}
	if errors.Is(err, worker.ErrDead) {
		return fmt.Errorf("job %s: %w; see its log on the volume: %s", id, err, mustLog(vol, id))
	}
	return err
}

func mustLog(v *volume.Volume, id string) string {
	p, _ := v.LogPath(id)
	return p
}

// jobWorker is what `worker run` and `worker serve` run jobs with: the
// processor made ready, the volume (this process registered on it), the
// store, and the worker with its observers.
type jobWorker struct {
	w        *worker.Worker
	cn       *conn
	vol      *volume.Volume
	draining error // the volume's drain mark, when its worker is leaving
	close    func()
}

// prepareJobWorker builds the worker of `worker run` and `worker serve`:
// one code path for both. volumeFlag, if set, overrides the configured
// volume.
func (o *workerRunOptions) prepareJobWorker(ctx context.Context, c *FileConfig, volumeFlag string) (jw *jobWorker, err error) {
	if volumeFlag != "" {
		c.Volume = volumeFlag
		if err := absDataDir(c); err != nil {
			return nil, err
		}
	}
	if c.Workers < 1 {
		return nil, usageErrorf("workers must be at least 1 for a worker, got %d", c.Workers)
	}
	if err := c.validateComponents(); err != nil {
		return nil, err
	}
	// Before any claim: a bundle whose setup fails takes no job.
	vers, err := c.prepareProcessor(ctx, o.Err)
	if err != nil {
		return nil, err
	}
	proc, err := processor.New(c.processorConfig())
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	if note := processor.SandboxNote(proc); note != "" {
		fmt.Fprintf(o.Err, "%s %s\n", time.Now().Format("15:04:05"), note)
	}
	vol, err := volume.Open(c.volumePath())
	if err != nil {
		return nil, err
	}
	// A worker leaving its fleet takes no job: the job stays queued for
	// another worker. Registered first, this process is signalled to hand
	// its job back when a drain starts (`worker watch`), and a drain waits
	// for it; it checks the drain mark only once registered, so none
	// slips between the two.
	reg, err := vol.RegisterRun()
	if err != nil {
		return nil, err
	}
	jw = &jobWorker{vol: vol, close: reg.Done}
	defer func() {
		if err != nil {
			jw.close()
		}
	}()
	jw.draining = vol.CheckDraining()
	if jw.cn, err = connect(ctx, *c); err != nil {
		return nil, err
	}
	wc := c.workerConfig()
	wc.ConfigVersion, wc.ProcessorVersion = vers.Config, vers.Processor
	wc.LogBucket = c.Buckets.State // the client reads the log there (conveyor logs)
	if jw.w, err = worker.New(wc, jw.cn.S3, jw.cn.Store, vol, proc); err != nil {
		return nil, usageErrorf("%v", err)
	}
	jw.w.Logf = func(format string, args ...any) {
		fmt.Fprintf(o.Err, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	obs, err := c.newObservers(ctx, o.Out, o.Err) // observe.go: job events and metrics
	if err != nil {
		return nil, err
	}
	jw.close = func() { obs.close(); reg.Done() }
	jw.w.OnChange = obs.changed
	if jw.w.LogSink, err = c.logSink(ctx); err != nil {
		return nil, err
	}
	return jw, nil
}
