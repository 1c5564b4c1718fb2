package local

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
)

var _ dispatch.Dispatcher = (*Dispatcher)(nil)

// RunFunc runs one job to its end; it is worker.(*Worker).Run in production.
type RunFunc func(ctx context.Context, jobID string) error

// Config configures the pool.
type Config struct {
	Workers int // concurrent jobs; default runtime.NumCPU()
	// OnDone, if set, is called after each run with its error (nil on
	// success). It runs on the pool goroutine.
	OnDone func(jobID string, err error)
}

// Dispatcher queues job IDs and runs them on a bounded pool.
type Dispatcher struct {
	run    RunFunc
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []string
	pending map[string]bool // queued or running: coalesces duplicates
	closed  bool
	wg      sync.WaitGroup

	paused  bool          // Pause: queued jobs wait
	running int           // jobs in d.run
	changed chan struct{} // closed and replaced when running drops
}

// New starts a dispatcher whose workers call run. Stop it with Close.
func New(run RunFunc, cfg Config) *Dispatcher {
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{run: run, cfg: cfg, ctx: ctx, cancel: cancel, pending: map[string]bool{}, changed: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	for i := 0; i < cfg.Workers; i++ {
		d.wg.Add(1)
		go d.loop()
	}
	return d
}

// Name implements dispatch.Dispatcher.
func (d *Dispatcher) Name() string { return "local" }

// Dispatch implements dispatch.Dispatcher. It never blocks on the pool: the
// job waits in the queue.
func (d *Dispatcher) Dispatch(ctx context.Context, jobID string) (string, error) {
	if !job.ValidID(jobID) {
		return "", fmt.Errorf("%w: %q", dispatch.ErrInvalidJobID, jobID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return "", dispatch.ErrClosed
	}
	if d.pending[jobID] {
		return "", nil
	}
	d.pending[jobID] = true
	d.queue = append(d.queue, jobID)
	d.cond.Signal()
	return "", nil
}

// Pending returns the number of jobs queued or running.
func (d *Dispatcher) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

// Has reports whether the job is queued or running here.
func (d *Dispatcher) Has(jobID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending[jobID]
}

// Close stops taking jobs, cancels the running ones (their records stay
// running and are taken over on the next start) and waits for the pool.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.queue = nil
	d.cond.Broadcast()
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	return nil
}

func (d *Dispatcher) loop() {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		for (len(d.queue) == 0 || d.paused) && !d.closed {
			d.cond.Wait()
		}
		if d.closed {
			d.mu.Unlock()
			return
		}
		id := d.queue[0]
		d.queue[0] = ""
		d.queue = d.queue[1:]
		d.running++
		d.mu.Unlock()

		err := d.run(d.ctx, id)

		d.mu.Lock()
		delete(d.pending, id)
		d.running--
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
		if d.cfg.OnDone != nil {
			d.cfg.OnDone(id, err)
		}
	}
}

// Pause stops jobs from starting: they stay queued (Dispatch still takes
// them) until Resume. Running jobs go on. Used by snapshot --quiesce.
func (d *Dispatcher) Pause() {
	d.mu.Lock()
	d.paused = true
	d.mu.Unlock()
}

// Resume lets queued jobs start again.
func (d *Dispatcher) Resume() {
	d.mu.Lock()
	d.paused = false
	d.cond.Broadcast()
	d.mu.Unlock()
}

// WaitIdle returns once no job is running (queued ones may wait, when
// paused), or ctx's error.
func (d *Dispatcher) WaitIdle(ctx context.Context) error {
	for {
		d.mu.Lock()
		n, ch := d.running, d.changed
		d.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
