package jobevents

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Publisher puts job state change events on a bus.
type Publisher interface {
	// Publish puts one event per detail, in order. It returns an error
	// when any of them was not accepted (the error says how many); the
	// others were.
	Publish(ctx context.Context, details []Detail) error
}

// DefaultPutTimeout bounds one Publish of an Emitter.
const DefaultPutTimeout = 5 * time.Second

// batchSize is how many events one Publish carries at most (PutEvents
// takes 10 entries).
const batchSize = 10

// Emitter turns record writes into events: Changed queues one when the
// state or the attempt changed (a heartbeat is no change) and returns at
// once; a goroutine publishes the queue, in order. A failed Publish is
// logged and counted; the job goes on. Flush waits for the queue: call it
// before the process ends or a Lambda invocation returns.
type Emitter struct {
	pub          Publisher
	outputBucket string
	logf         func(format string, args ...any)
	// PutTimeout bounds one Publish; DefaultPutTimeout when zero.
	PutTimeout time.Duration

	mu      sync.Mutex
	pending []Detail
	last    map[string]string // job ID -> state/attempt of its last event, while unfinished
	running bool
	idle    chan struct{} // closed when the current run ends

	sent, failed atomic.Int64
}

// NewEmitter returns an Emitter publishing to p. outputBucket names the
// bucket of the outputs in events ("" leaves it out); logf receives one
// line per failed Publish (nil: silent).
func NewEmitter(p Publisher, outputBucket string, logf func(format string, args ...any)) *Emitter {
	return &Emitter{pub: p, outputBucket: outputBucket, logf: logf, last: map[string]string{}}
}

// Changed queues an event for r if its state or attempt changed since the
// last event of the job this Emitter sent. It never blocks on the bus and
// keeps nothing of r. A nil Emitter does nothing.
func (e *Emitter) Changed(r *job.Record) {
	if e == nil || r == nil {
		return
	}
	key := fmt.Sprintf("%s/%d", r.State, r.Attempt)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.last[r.ID] == key {
		return
	}
	if r.State.Terminal() {
		delete(e.last, r.ID) // nothing follows; the map stays the size of the work in flight
	} else {
		e.last[r.ID] = key
	}
	e.pending = append(e.pending, DetailOf(r, e.outputBucket))
	if !e.running {
		e.running = true
		e.idle = make(chan struct{})
		go e.run(e.idle)
	}
}

func (e *Emitter) run(idle chan struct{}) {
	for {
		e.mu.Lock()
		if len(e.pending) == 0 {
			e.running = false
			close(idle)
			e.mu.Unlock()
			return
		}
		n := min(len(e.pending), batchSize)
		batch := e.pending[:n:n]
		e.pending = e.pending[n:]
		e.mu.Unlock()

		timeout := e.PutTimeout
		if timeout <= 0 {
			timeout = DefaultPutTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := e.pub.Publish(ctx, batch)
		cancel()
		if err != nil {
			// Which entries failed is in err; count the batch as failed,
			// the metric is for alarms, not for accounting.
			e.failed.Add(int64(len(batch)))
			if e.logf != nil {
				e.logf("job events: %d event(s) not published (job %s %s first): %v", len(batch), batch[0].JobID, batch[0].State, err)
			}
			continue
		}
		e.sent.Add(int64(len(batch)))
	}
}

// Flush waits until every event queued so far was published or given up,
// or ctx ends. A nil Emitter has nothing to flush.
func (e *Emitter) Flush(ctx context.Context) error {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	running, idle := e.running, e.idle
	e.mu.Unlock()
	if !running {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sent is how many events the bus accepted.
func (e *Emitter) Sent() int64 { return e.sent.Load() }

// Failed is how many events were not published.
func (e *Emitter) Failed() int64 { return e.failed.Load() }
