package natsworker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	natsdispatch "github.com/conveyorhq/conveyor/internal/dispatch/nats"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/worker"
)

// Defaults of Config.
const (
	DefaultDurable    = "conveyor-workers"
	DefaultStopDelay  = time.Second
	DefaultErrorDelay = 5 * time.Second
	// fetchWait bounds one pull request: Stop waits for it at most.
	fetchWait = 2 * time.Second
)

// RunFunc runs one job to its end and reports as worker.Worker.Run does.
type RunFunc func(ctx context.Context, jobID string) error

// Config configures a Consumer.
type Config struct {
	Stream natsdispatch.StreamConfig
	// Durable names the pull consumer every worker shares (default
	// DefaultDurable).
	Durable string
	// Slots is how many jobs this consumer runs at once (the volume's
	// job slots); it pulls a message only for a free slot.
	Slots int
	// Lease is the job lease of the worker (worker.Config.Lease): the
	// ack deadline is 1.5 leases, extended every Lease/3.
	Lease time.Duration
	// StopDelay is the redelivery delay of a job handed back on stop;
	// ErrorDelay that of a job whose run failed for a reason the record
	// does not hold (the store unreachable, say).
	StopDelay, ErrorDelay time.Duration
	// Logf, if set, receives one line per notable event.
	Logf func(format string, args ...any)
	// OnSettled, if set, is called after each message is settled with
	// the job ID, the run's error and what was done ("ack", "term",
	// "nak <delay>"). For logs and tests.
	OnSettled func(jobID string, err error, action string)
}

// WithDefaults fills in unset fields.
func (c Config) WithDefaults() Config {
	c.Stream = c.Stream.WithDefaults()
	if c.Durable == "" {
		c.Durable = DefaultDurable
	}
	if c.Lease == 0 {
		c.Lease = worker.DefaultLease
	}
	if c.StopDelay == 0 {
		c.StopDelay = DefaultStopDelay
	}
	if c.ErrorDelay == 0 {
		c.ErrorDelay = DefaultErrorDelay
	}
	return c
}

// Validate names the first invalid field.
func (c Config) Validate() error {
	if err := c.Stream.Validate(); err != nil {
		return err
	}
	switch {
	case c.Slots < 1 || c.Slots > 256:
		return fmt.Errorf("workers must be between 1 and 256, got %d", c.Slots)
	case c.Lease < 3*time.Second:
		return fmt.Errorf("worker.lease must be at least 3s, got %s", c.Lease)
	}
	return nil
}

// AckWait is the consumer's ack deadline for a lease: long enough that a
// killed worker's job lease has lapsed when its message comes back.
func AckWait(lease time.Duration) time.Duration { return lease + lease/2 }

// Consumer pulls job IDs and runs them.
type Consumer struct {
	js  jetstream.JetStream
	cfg Config
	run RunFunc

	mu       sync.Mutex
	cond     *sync.Cond
	started  bool
	stopped  bool
	paused   bool
	running  int
	cancel   context.CancelFunc // ends the fetch loops
	jobStop  context.CancelFunc // ends the running jobs (hand back)
	wg       sync.WaitGroup
	consumer jetstream.Consumer
}

// New returns a consumer that runs jobs with run. Start it with Start.
func New(js jetstream.JetStream, cfg Config, run RunFunc) (*Consumer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Consumer{js: js, cfg: cfg, run: run}
	c.cond = sync.NewCond(&c.mu)
	return c, nil
}

// Start ensures the stream and the shared consumer exist and starts
// pulling. A second Start is a no-op.
func (c *Consumer) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return nil
	}
	if _, err := natsdispatch.EnsureStream(ctx, c.js, c.cfg.Stream); err != nil {
		return err
	}
	// The consumer is shared: its ack wait is the last starter's. Workers
	// with other leases are safe (a redelivered job held by a live worker
	// is naked, not taken) but wasteful: say so.
	if old, err := c.js.Consumer(ctx, c.cfg.Stream.Stream, c.cfg.Durable); err == nil {
		if w := old.CachedInfo().Config.AckWait; w != AckWait(c.cfg.Lease) {
			c.logf("the shared NATS consumer %s had an ack wait of %s, this worker sets %s (1.5 x worker.lease %s): give every worker the same worker.lease", c.cfg.Durable, w, AckWait(c.cfg.Lease), c.cfg.Lease)
		}
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.cfg.Stream.Stream, jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		Description:   "conveyor worker serve: every worker pulls from it",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       AckWait(c.cfg.Lease),
		MaxDeliver:    -1, // attempts are counted in the record
		FilterSubject: c.cfg.Stream.Filter(),
		MaxAckPending: 100000,
	})
	if err != nil {
		return fmt.Errorf("create the shared consumer %s on stream %s: %w", c.cfg.Durable, c.cfg.Stream.Stream, err)
	}
	c.consumer = cons
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	jobCtx, jobStop := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel, c.jobStop, c.started = cancel, jobStop, true
	for i := 0; i < c.cfg.Slots; i++ {
		c.wg.Add(1)
		go c.loop(loopCtx, jobCtx)
	}
	return nil
}

// Stop stops pulling, hands the running jobs back (their runs end with
// the context's error and their messages are naked with StopDelay) and
// waits for them. Stop before Start, or twice, is safe.
func (c *Consumer) Stop() {
	c.mu.Lock()
	if !c.started || c.stopped {
		c.stopped = true
		c.mu.Unlock()
		return
	}
	c.stopped = true
	c.cond.Broadcast()
	c.mu.Unlock()
	c.cancel()
	c.jobStop()
	c.wg.Wait()
}

// Pause stops taking new jobs; running ones go on. Resume undoes it.
func (c *Consumer) Pause() {
	c.mu.Lock()
	c.paused = true
	c.mu.Unlock()
}

// Resume lets a paused consumer take jobs again.
func (c *Consumer) Resume() {
	c.mu.Lock()
	c.paused = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// WaitIdle waits until no job runs, or ctx ends.
func (c *Consumer) WaitIdle(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.running > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.cond.Wait()
	}
	return nil
}

// Running is how many jobs run now.
func (c *Consumer) Running() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// loop is one slot: it pulls one message at a time and runs it.
func (c *Consumer) loop(ctx, jobCtx context.Context) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		for c.paused && !c.stopped {
			c.cond.Wait()
		}
		stopped := c.stopped
		c.mu.Unlock()
		if stopped || ctx.Err() != nil {
			return
		}
		batch, err := c.consumer.Fetch(1, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.logf("pull a job from NATS: %v (trying again)", err)
			sleep(ctx, time.Second)
			continue
		}
		for m := range batch.Messages() {
			c.handle(jobCtx, m)
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			c.logf("pull a job from NATS: %v (trying again)", err)
			sleep(ctx, time.Second)
		}
	}
}

// handle runs one message's job and settles the message.
func (c *Consumer) handle(ctx context.Context, m jetstream.Msg) {
	id := c.cfg.Stream.JobID(m.Subject())
	if !job.ValidID(id) || string(m.Data()) != id {
		// Not Conveyor's: it can never run, and must not block the queue.
		m.TermWithReason("not a Conveyor job ID")
		c.logf("NATS message on %q is not a job ID: dropped", m.Subject())
		c.settled(id, job.ErrInvalidID, "term")
		return
	}
	c.mu.Lock()
	if c.stopped || c.paused {
		// Fetched as the consumer stopped or paused (a snapshot waits for
		// idle): handed back, never started behind WaitIdle's back.
		c.mu.Unlock()
		c.settle(m, id, context.Canceled)
		return
	}
	c.running++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running--
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	// The ack deadline is extended while the job runs, at the pace of the
	// lease's renewals; a killed process stops both.
	hbCtx, hbStop := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(c.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				if err := m.InProgress(); err != nil {
					c.logf("job %s: extend its NATS ack deadline: %v", id, err)
				}
			}
		}
	}()
	err := c.run(ctx, id)
	hbStop()
	<-hbDone
	c.settle(m, id, err)
}

// settle acknowledges, terminates or naks the message by the run's
// outcome (see the package doc).
func (c *Consumer) settle(m jetstream.Msg, id string, err error) {
	var re *worker.RetryError
	var action string
	var aerr error
	nak := func(d time.Duration) {
		if d < 100*time.Millisecond {
			d = 100 * time.Millisecond
		}
		action = "nak " + d.Round(time.Millisecond).String()
		aerr = m.NakWithDelay(d)
	}
	switch {
	case err == nil, errors.Is(err, worker.ErrSuperseded):
		action = "ack"
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		aerr = m.DoubleAck(actx)
		cancel()
	case errors.Is(err, worker.ErrDead):
		action = "term"
		aerr = m.TermWithReason("job is dead")
	case errors.As(err, &re):
		nak(re.After)
	case errors.Is(err, worker.ErrBusy):
		// Never acknowledged: if its holder dies, this message is what
		// brings the job to another worker.
		c.logf("job %s is held by another live worker: its message comes back in %s", id, (c.cfg.Lease / 3).Round(time.Millisecond))
		nak(c.cfg.Lease / 3)
	case errors.Is(err, context.Canceled):
		nak(c.cfg.StopDelay)
	default:
		c.logf("job %s: %v (it is delivered again in %s)", id, err, c.cfg.ErrorDelay)
		nak(c.cfg.ErrorDelay)
	}
	if aerr != nil {
		// The message comes back after its ack deadline; the record tells
		// the next delivery what is left to do.
		c.logf("job %s: settle its NATS message (%s): %v", id, action, aerr)
	}
	c.settled(id, err, action)
}

func (c *Consumer) settled(id string, err error, action string) {
	if c.cfg.OnSettled != nil {
		c.cfg.OnSettled(id, err, action)
	}
}

func (c *Consumer) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(format, args...)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
