package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobevents"
)

// Notifier sends job state changes to webhooks. Changed queues, never
// blocks; Start begins delivery; Stop drains, a bounded time.
type Notifier struct {
	cfg     Config
	targets []*target
	now     func() time.Time

	mu      sync.RWMutex // held for reading by Changed while it sends; Stop closes the queues under it
	closed  bool
	lastMu  sync.Mutex
	last    map[string]string // job ID -> state/attempt of its last change, while unfinished
	started bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stop    sync.Once
}

// event is one change, encoded once for every webhook.
type event struct {
	id    string
	state job.State
	jobID string
	body  []byte
}

// New returns a Notifier for cfg (defaults filled in), or an error
// naming the first invalid setting.
func New(cfg Config) (*Notifier, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Notifier{cfg: cfg, now: time.Now, last: map[string]string{}}
	for i, w := range cfg.Webhooks {
		n.targets = append(n.targets, newTarget(i, w, cfg))
	}
	return n, nil
}

// Start begins delivering, in the background, until Stop. Changes
// queued before Start wait for it. Start twice is harmless.
func (n *Notifier) Start(ctx context.Context) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started || n.closed {
		return nil
	}
	n.started = true
	n.ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for _, t := range n.targets {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); t.run(n.ctx) }()
	}
	return nil
}

// Changed queues r for every webhook whose filter takes its state, when
// its state or attempt changed since the last change of the job this
// Notifier saw (a heartbeat is no change). It never blocks: a full queue
// drops the change (counted, logged). It keeps nothing of r. A nil
// Notifier does nothing.
func (n *Notifier) Changed(r *job.Record) {
	if n == nil || r == nil || len(n.targets) == 0 {
		return
	}
	key := string(r.State) + "/" + strconv.Itoa(r.Attempt)
	n.lastMu.Lock()
	if n.last[r.ID] == key {
		n.lastMu.Unlock()
		return
	}
	if r.State.Terminal() {
		delete(n.last, r.ID) // the map stays the size of the work in flight
	} else {
		n.last[r.ID] = key
	}
	n.lastMu.Unlock()

	var ev *event
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return
	}
	for _, t := range n.targets {
		if !t.wants(r.State) {
			continue
		}
		if ev == nil {
			body, err := json.Marshal(jobevents.DetailOf(r, n.cfg.OutputBucket))
			if err != nil {
				n.logf("webhooks: encode the change of job %s: %v", r.ID, err)
				return
			}
			ev = &event{id: EventID(r.ID, r.State, r.Attempt), state: r.State, jobID: r.ID, body: body}
		}
		t.enqueue(ev)
	}
}

// EventID names one change of a job (its state and attempt): the same on
// every retry and after a restart, so that a receiver can drop
// duplicates.
func EventID(jobID string, s job.State, attempt int) string {
	h := sha256.Sum256([]byte(jobID + "/" + string(s) + "/" + strconv.Itoa(attempt)))
	return hex.EncodeToString(h[:16])
}

// Stop stops taking changes and waits up to Config.DrainTimeout for the
// queued ones to be delivered; what is left then (retries waiting
// included) is given up and counted as failed. Stop twice is harmless.
func (n *Notifier) Stop() {
	if n == nil {
		return
	}
	n.stop.Do(func() {
		n.mu.Lock()
		n.closed = true
		for _, t := range n.targets {
			close(t.queue)
		}
		started := n.started
		n.mu.Unlock()
		if !started {
			for _, t := range n.targets {
				t.abandon(len(t.queue))
			}
			return
		}
		done := make(chan struct{})
		go func() { n.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(n.cfg.DrainTimeout):
			n.cancel() // the goroutines give up what is left, at once
			<-done
		}
		n.cancel()
	})
}

// Stats is what one webhook did so far.
type Stats struct {
	Index     int    // position in Config.Webhooks
	URL       string // redacted: no user info, no query
	Delivered int64  // changes the receiver accepted (2xx)
	Failed    int64  // changes given up: refused (4xx), out of attempts, or left at Stop
	Dropped   int64  // changes not queued: the queue was full
	Retries   int64  // requests repeated after a retryable failure
	Queued    int    // changes waiting now
}

// Stats returns each webhook's counts, in Config.Webhooks order.
func (n *Notifier) Stats() []Stats {
	if n == nil {
		return nil
	}
	out := make([]Stats, 0, len(n.targets))
	for _, t := range n.targets {
		out = append(out, t.stats())
	}
	return out
}

func (n *Notifier) logf(format string, args ...any) {
	if n.cfg.Logf != nil {
		n.cfg.Logf(format, args...)
	}
}

// Describe is one line for start-up: how many webhooks, where.
func (n *Notifier) Describe() string {
	if n == nil || len(n.targets) == 0 {
		return ""
	}
	s := fmt.Sprintf("%d webhook(s):", len(n.targets))
	for _, t := range n.targets {
		s += " " + t.url
	}
	return s
}
