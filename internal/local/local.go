package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/dashboard"
	"github.com/conveyorhq/conveyor/internal/dispatch"
	localdispatch "github.com/conveyorhq/conveyor/internal/dispatch/local"
	natsdispatch "github.com/conveyorhq/conveyor/internal/dispatch/nats"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/metrics"
	"github.com/conveyorhq/conveyor/internal/notify"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/s3server"
	"github.com/conveyorhq/conveyor/internal/snapshot"
	"github.com/conveyorhq/conveyor/internal/volume"
	"github.com/conveyorhq/conveyor/internal/worker"
)

// Buckets names the three buckets.
type Buckets struct{ Input, Output, State string }

// Config is everything `conveyor up` runs with.
type Config struct {
	DataDir      string // absolute
	S3Addr       string
	Region       string
	Credentials  Credentials // empty: generated on first start and stored
	Buckets      Buckets
	Orchestrator orchestrator.Config
	Worker       worker.Config
	Processor    processor.Config
	Workers      int           // concurrent jobs
	Reconcile    time.Duration // reconciler interval
	// ReconcileBudget bounds one reconciler pass; SweepEvery is how often
	// the input bucket is swept for lost events; Retention removes
	// finished records older than it (0 keeps them). Zero values take the
	// orchestrator's defaults.
	ReconcileBudget time.Duration
	SweepEvery      time.Duration
	Retention       time.Duration
	// Log receives one line per notable event (jobs finishing, errors).
	Log io.Writer
	// Dashboard configures the web page; nil runs none.
	Dashboard *dashboard.Config
	// Snapshots feeds the dashboard's snapshot panel; nil hides it.
	Snapshots dashboard.Snapshots
	// Metrics, when set, counts jobs, dispatches and reconcile passes,
	// and the dashboard serves it at /metrics. Webhooks, when set,
	// receives every job state change; Start starts it, Stop drains it.
	Metrics  *metrics.Metrics
	Webhooks *notify.Notifier
	// External, when set, holds the buckets instead of the embedded
	// server (S3Addr and Credentials are then unused), and Events say
	// where its notifications come from (store.go, events.go).
	External *ExternalStore
	Events   EventSources
	// NATS, if set, dispatches through a NATS JetStream work queue
	// (cluster.go) that `conveyor worker serve` processes share with this
	// one's Workers; Workers 0 then runs no job here.
	NATS *NATSConfig
}

// Pipeline is a running `conveyor up`.
type Pipeline struct {
	cfg        Config
	Paths      Paths
	Server     *s3server.Server
	S3         *s3.Client
	Store      *jobstore.Store
	Reconciler *orchestrator.Reconciler
	Orch       *orchestrator.Orchestrator
	Dashboard  *dashboard.Server // nil when Config.Dashboard is nil

	lock       *os.File
	dispatcher dispatch.Dispatcher
	pool       *localdispatch.Dispatcher // nil with NATS
	quiescer   snapshot.Quiescer
	nats       *natsParts              // nil without NATS
	control    *snapshot.QuiesceServer // nil when the socket could not be made
	events     *queue[[]byte]
	observers  *observers
	sources    eventSources
	endpoint   string
	logMu      sync.Mutex
	wg         sync.WaitGroup
	stopOnce   sync.Once
}

// Start brings the pipeline up and returns once it serves. Errors are
// sentences a person can act on.
func Start(ctx context.Context, cfg Config) (*Pipeline, error) {
	if !filepath.IsAbs(cfg.DataDir) {
		return nil, fmt.Errorf("data dir %q must be absolute", cfg.DataDir)
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	// The data dir holds the store's credentials: a sandboxed processor
	// must not read it, wherever it lies.
	cfg.Processor.Hide = append(slices.Clip(cfg.Processor.Hide), cfg.DataDir)
	proc, err := processor.New(cfg.Processor)
	if err != nil {
		return nil, err
	}
	paths := Paths{Root: cfg.DataDir}
	for _, d := range []string{paths.Root, paths.S3Root()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("create data dir %s: %w", d, err)
		}
	}
	p := &Pipeline{cfg: cfg, Paths: paths, events: newQueue[[]byte](), observers: newObservers(cfg)}
	if note := processor.SandboxNote(proc); note != "" {
		p.logf("%s", note)
	}
	if p.lock, err = lockDataDir(paths); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			p.Stop()
		}
	}()
	creds := cfg.Credentials
	if cfg.External == nil && (creds.AccessKeyID == "" || creds.SecretAccessKey == "") {
		if creds, err = EnsureCredentials(paths); err != nil {
			return nil, err
		}
	}
	vol, err := volume.Open(paths.Volume())
	if err != nil {
		return nil, err
	}
	st, err := p.openStore(ctx, creds) // store.go
	if err != nil {
		return nil, err
	}
	p.Server, p.S3, p.endpoint = st.server, st.client, st.endpoint
	p.sources.versioned = st.versioned
	p.Store = jobstore.New(st.objects, cfg.Buckets.State)

	wcfg := cfg.Worker
	wcfg.OutputBucket = cfg.Buckets.Output
	w, err := worker.New(wcfg, p.S3, p.Store, vol, proc)
	if err != nil {
		return nil, err
	}
	w.Logf = p.logf
	w.Objects = st.objects
	w.OnChange = p.jobChanged
	if cfg.NATS == nil {
		p.pool = localdispatch.New(w.Run, localdispatch.Config{Workers: cfg.Workers, OnDone: p.onDone})
		p.dispatcher, p.quiescer = p.pool, p.pool
	} else {
		if p.nats, err = p.startNATS(ctx, *cfg.NATS); err != nil {
			return nil, err
		}
		if p.dispatcher, err = natsdispatch.New(ctx, p.nats.js, cfg.NATS.Stream); err != nil {
			return nil, err
		}
		p.quiescer = noQuiesce{}
		if cfg.Workers > 0 {
			// This process is one more worker on the shared queue.
			if err := p.nats.startConsumer(ctx, cfg.Workers, wcfg.Lease, w.Run, p.logf); err != nil {
				return nil, err
			}
			p.quiescer = p.nats.consumer
		}
	}
	// `conveyor snapshot create --quiesce` pauses the pool through it.
	if p.control, err = snapshot.ListenQuiesce(paths.ControlSocket(), p.quiescer); err != nil {
		p.logf("snapshot --quiesce unavailable: %v", err)
	}
	ocfg := cfg.Orchestrator
	ocfg.InputBucket = cfg.Buckets.Input
	p.observers.dispatcher = cfg.Metrics.Dispatcher(p.dispatcher)
	p.Orch, err = orchestrator.New(ocfg, p.S3, p.Store, p.observers.dispatcher)
	if err != nil {
		return nil, err
	}
	p.Orch.OnChange = p.observers.changed
	if err := cfg.Webhooks.Start(ctx); err != nil {
		return nil, err
	}
	// Two consumers: the orchestrator waits on the store, not the CPU.
	for i := 0; i < 2; i++ {
		p.wg.Add(1)
		go p.consume()
	}
	p.Reconciler = orchestrator.NewReconciler(p.Orch, cfg.Reconcile)
	if p.pool != nil {
		p.Reconciler.ResumeLiveLeases = true
		// Dispatch is in process: InHand says what is in flight, and a job
		// dispatched by a previous run of this process was lost with it.
		p.Reconciler.RedispatchAfter, p.Reconciler.MaxUndelivered = 0, 0
		p.Reconciler.InHand = p.pool.Has
	} else {
		// Dispatch is remote, as on AWS: workers on other volumes hold
		// jobs by their lease, and a message on its way is left alone for
		// RedispatchAfter. The stream keeps a job's message until a worker
		// acknowledges it, so waiting in a backlog with no worker up is not
		// a lost delivery: no job is ended for too many dispatches.
		p.Reconciler.ResumeLiveLeases = false
		p.Reconciler.RedispatchAfter, p.Reconciler.MaxUndelivered = orchestrator.DefaultRedispatchAfter, 0
	}
	p.Reconciler.Versioned = st.versioned
	p.Reconciler.Budget, p.Reconciler.SweepEvery, p.Reconciler.Retention = cfg.ReconcileBudget, cfg.SweepEvery, cfg.Retention
	p.Reconciler.MaxAge = cfg.Retention // an input older than the history kept is never taken for a lost event
	// Events wait in memory: a crash loses those not yet handled, so a
	// start after one (its run info was never removed) sweeps the objects
	// newer than the last sweep at once.
	if _, err := os.Stat(paths.RunInfo()); err == nil {
		p.Reconciler.SweepOnStart = true
		p.logf("the last run did not stop cleanly: sweeping the input bucket for uploads whose events it lost")
	}
	if cfg.External != nil {
		// An external store takes uploads while this process is down,
		// and their events reach no one.
		p.Reconciler.SweepOnStart = true
		if err := p.startEvents(cfg.Events); err != nil { // events.go
			return nil, err
		}
	}
	p.Reconciler.OnReport = func(r orchestrator.Report) {
		p.observers.reconciled(r)
		if r.Missing > 0 || r.Unfinished > 0 || r.Repaired > 0 || r.Expired > 0 || r.Superseded > 0 || r.Indexed > 0 || len(r.Errors) > 0 {
			p.logf("reconcile: %d unfinished jobs read, %d dispatched again, %d index markers repaired; swept %d input versions, %d without a job, %d older ones recorded superseded; %d finished records expired, %d indexed; %d errors %v%s; pass in %s",
				r.Active, r.Unfinished, r.Repaired, r.Objects, r.Missing, r.Superseded, r.Expired, r.Indexed, len(r.Errors), r.Errors, limitedNote(r.Limited), r.Duration.Round(time.Millisecond))
		}
	}
	if err := p.Reconciler.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, err
	}
	ri := RunInfo{PID: os.Getpid(), Endpoint: p.endpoint, Region: cfg.Region, DataDir: paths.Root, External: cfg.External != nil}
	if cfg.Dashboard != nil {
		if err := p.startDashboard(ctx, *cfg.Dashboard, vol); err != nil {
			return nil, err
		}
		ri.Dashboard = p.Dashboard.URL()
	}
	if err := writeRunInfo(paths, ri); err != nil {
		return nil, fmt.Errorf("write run info: %w", err)
	}
	ok = true
	return p, nil
}

// Endpoint is the S3 endpoint URL: the embedded server's or the external
// store's.
func (p *Pipeline) Endpoint() string { return p.endpoint }

// Done is closed when the embedded server stops on its own (a fatal
// error); never with an external store.
func (p *Pipeline) Done() <-chan struct{} {
	if p.Server == nil {
		return nil
	}
	return p.Server.Done()
}

func (p *Pipeline) consume() {
	defer p.wg.Done()
	for {
		n, ok := p.events.pop()
		if !ok {
			return
		}
		results, err := p.handleEvent(context.Background(), n) // versions.go
		for _, r := range results {
			if r.JobID != "" && p.Dashboard != nil {
				p.Dashboard.Touch(r.JobID)
			}
			if r.Outcome == orchestrator.Filtered && r.Object.Bucket != p.cfg.Buckets.Input {
				p.noteForeign(r.Object.Bucket)
			}
			if r.Err != nil {
				p.logf("event for s3://%s/%s: %v (the reconciler will try again)", r.Object.Bucket, job.Printable(r.Object.Key), r.Err)
			}
		}
		if err != nil && len(results) == 0 {
			p.logf("event: %v", err)
		}
	}
}

func (p *Pipeline) onDone(id string, err error) {
	var re *worker.RetryError
	switch {
	case errors.As(err, &re):
		time.AfterFunc(re.After, func() { p.observers.dispatcher.Dispatch(context.Background(), id) })
	case errors.Is(err, context.Canceled), errors.Is(err, worker.ErrDead), errors.Is(err, worker.ErrSuperseded), errors.Is(err, worker.ErrBusy), err == nil:
		// Already logged by the worker, or shutting down.
	default:
		p.logf("job %s: %v (the reconciler will try again)", id, err)
	}
}

func (p *Pipeline) logf(format string, args ...any) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	fmt.Fprintf(p.cfg.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// Stop shuts the pipeline down: no new events, running attempts cancelled
// (their records are taken over at the next start), server stopped.
func (p *Pipeline) Stop() error {
	var err error
	p.stopOnce.Do(func() {
		if p.Dashboard != nil {
			p.Dashboard.Stop()
		}
		if p.Reconciler != nil {
			p.Reconciler.Stop()
		}
		p.stopEvents()
		p.events.close()
		p.wg.Wait()
		if p.control != nil {
			p.control.Close()
			os.Remove(p.Paths.ControlSocket())
		}
		if p.dispatcher != nil {
			p.dispatcher.Close()
		}
		// Hands this process's jobs back through the S3 server, still up.
		p.nats.stopConsumer()
		p.nats.close()
		// After the workers: the hand-backs of their jobs are changes too.
		p.cfg.Webhooks.Stop()
		if p.Server != nil {
			// The gateway waits up to 10s for clients' keep-alive
			// connections. Objects are published atomically, so leaving
			// earlier is as safe as a crash, which the pipeline survives.
			stopped := make(chan error, 1)
			go func() { stopped <- p.Server.Stop() }()
			select {
			case err = <-stopped:
			case <-time.After(2 * time.Second):
			}
		}
		os.Remove(p.Paths.RunInfo())
		if p.lock != nil {
			// Unlocked before the close: a child another goroutine is
			// starting holds a copy of the descriptor until it executes,
			// and would keep the lock from a pipeline started next.
			syscall.Flock(int(p.lock.Fd()), syscall.LOCK_UN)
			p.lock.Close()
		}
	})
	return err
}

// jobChanged passes a record the worker wrote on to the observers and
// the dashboard.
func (p *Pipeline) jobChanged(r *job.Record) {
	p.observers.changed(r)
	if p.Dashboard != nil {
		p.Dashboard.Observe(r)
	}
}

// startDashboard serves the web page over the pipeline's own clients.
func (p *Pipeline) startDashboard(ctx context.Context, cfg dashboard.Config, vol *volume.Volume) error {
	budget := p.cfg.Orchestrator.WithDefaults().MaxAttempts
	d, err := dashboard.New(cfg, dashboard.Deps{
		S3:           p.S3,
		Store:        p.Store,
		InputBucket:  p.cfg.Buckets.Input,
		OutputBucket: p.cfg.Buckets.Output,
		LogPath:      vol.LogPath,
		Retry: func(ctx context.Context, id string) (*job.Record, error) {
			rec, err := worker.Retry(ctx, p.Store, id, budget)
			if err != nil {
				return nil, err
			}
			p.observers.changed(rec) // back to queued: metrics and webhooks see it
			if err := p.Orch.Dispatch(ctx, id); err != nil {
				return rec, fmt.Errorf("%w (the reconciler will dispatch it)", err)
			}
			return rec, nil
		},
		Snapshots: p.cfg.Snapshots,
		Metrics:   p.cfg.Metrics.Handler(),
		Logf:      p.logf,
	})
	if err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	p.Dashboard = d
	return nil
}

// ControlSocket is the unix socket (mode 0600) through which `conveyor
// snapshot create --quiesce` pauses the running pipeline.
func (p Paths) ControlSocket() string { return filepath.Join(p.Root, "control.sock") }

// Quiesce stops new jobs from starting and waits up to timeout for the
// running ones; resume lets them start again. For scheduled snapshots.
func (p *Pipeline) Quiesce(ctx context.Context, timeout time.Duration) (resume func(), err error) {
	p.quiescer.Pause()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := p.quiescer.WaitIdle(ctx); err != nil {
		p.quiescer.Resume()
		return nil, fmt.Errorf("running jobs did not finish within %s", timeout)
	}
	return p.quiescer.Resume, nil
}

func limitedNote(limited bool) string {
	if limited {
		return " (stopped at its budget: the next pass resumes)"
	}
	return ""
}
