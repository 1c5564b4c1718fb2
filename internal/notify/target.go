package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/version"
)

// target is one webhook: its queue and its delivery loop.
type target struct {
	index  int
	url    string // redacted, for logs and stats
	hook   Webhook
	cfg    Config
	states map[job.State]bool // nil: every state
	queue  chan *event
	client *http.Client
	now    func() time.Time

	delivered, failed, dropped, retries atomic.Int64

	logMu      sync.Mutex
	lastLogged time.Time // of an overflow
	unlogged   int64     // overflows since
}

// overflowLogEvery bounds the overflow log lines of one webhook.
const overflowLogEvery = 10 * time.Second

func newTarget(i int, w Webhook, cfg Config) *target {
	t := &target{
		index: i, url: Redact(w.URL), hook: w, cfg: cfg,
		queue: make(chan *event, cfg.QueueSize), now: time.Now,
		client: &http.Client{
			Timeout: cfg.Timeout,
			// A redirect would turn the POST into a GET elsewhere: the
			// receiver's URL is what the user configured, nothing else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if len(w.States) > 0 {
		t.states = map[job.State]bool{}
		for _, s := range w.States {
			t.states[s] = true
		}
	}
	return t
}

func (t *target) wants(s job.State) bool { return t.states == nil || t.states[s] }

// enqueue never blocks (the caller holds the Notifier's read lock, so
// the queue is open).
func (t *target) enqueue(ev *event) {
	select {
	case t.queue <- ev:
		return
	default:
	}
	t.dropped.Add(1)
	t.logMu.Lock()
	t.unlogged++
	if now := t.now(); now.Sub(t.lastLogged) >= overflowLogEvery {
		t.lastLogged = now
		n := t.unlogged
		t.unlogged = 0
		t.logMu.Unlock()
		t.logf("webhook %s: queue full (%d changes waiting): %d change(s) dropped, job %s %s the latest; the receiver is slower than the jobs (%d dropped in all)",
			t.url, cap(t.queue), n, ev.jobID, ev.state, t.dropped.Load())
		return
	}
	t.logMu.Unlock()
}

// run delivers the queue in order until it is closed and drained, or
// ctx ends (then what is left is given up).
func (t *target) run(ctx context.Context) {
	for ev := range t.queue {
		if ctx.Err() != nil {
			t.abandon(1 + len(t.queue))
			for range t.queue {
			}
			return
		}
		t.deliver(ctx, ev)
	}
}

func (t *target) abandon(n int) {
	if n > 0 {
		t.failed.Add(int64(n))
		t.logf("webhook %s: %d change(s) not delivered: stopping", t.url, n)
	}
}

// deliver sends one change, retrying what may succeed later.
func (t *target) deliver(ctx context.Context, ev *event) {
	for attempt := 1; ; attempt++ {
		status, after, err := t.post(ctx, ev)
		if err == nil {
			t.delivered.Add(1)
			return
		}
		retryable := status == 0 || status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
		if !retryable || attempt >= t.cfg.MaxAttempts || ctx.Err() != nil {
			t.failed.Add(1)
			why := "not retried"
			if retryable {
				why = fmt.Sprintf("gave up after %d attempt(s)", attempt)
			}
			t.logf("webhook %s: change of job %s to %s not delivered (%s): %v", t.url, ev.jobID, ev.state, why, err)
			return
		}
		if after <= 0 {
			after = t.backoff(attempt)
		}
		select {
		case <-ctx.Done():
			t.failed.Add(1)
			t.logf("webhook %s: change of job %s to %s not delivered: stopping during its retries (%v)", t.url, ev.jobID, ev.state, err)
			return
		case <-time.After(after):
		}
		t.retries.Add(1)
	}
}

// backoff is the wait before retry n (n >= 1): drawn at random below
// Backoff × 2^(n-1), capped at MaxBackoff (full jitter: receivers that
// come back are not hit by every sender at once).
func (t *target) backoff(n int) time.Duration {
	d := t.cfg.Backoff << min(n-1, 30)
	if d <= 0 || d > t.cfg.MaxBackoff {
		d = t.cfg.MaxBackoff
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// post makes one request. status is 0 when no response came; after is
// the receiver's Retry-After, when it sent one.
func (t *target) post(ctx context.Context, ev *event) (status int, after time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.hook.URL, bytes.NewReader(ev.body))
	if err != nil {
		return 0, 0, err
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "conveyor/"+version.Version)
	h.Set(EventIDHeader, ev.id)
	h.Set(EventTypeHeader, EventType)
	// Signed at each request: a retry an hour later is not refused as old.
	h.Set(SignatureHeader, Sign(t.hook.Secret, t.now(), ev.body))
	resp, err := t.client.Do(req)
	if err != nil {
		var ue interface{ Timeout() bool }
		if errors.As(err, &ue) && ue.Timeout() {
			return 0, 0, fmt.Errorf("no answer within %s", t.cfg.Timeout)
		}
		return 0, 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, 0, nil
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		after = min(time.Duration(s)*time.Second, t.cfg.MaxBackoff)
	}
	return resp.StatusCode, after, fmt.Errorf("the receiver answered %s", resp.Status)
}

func (t *target) stats() Stats {
	return Stats{
		Index: t.index, URL: t.url,
		Delivered: t.delivered.Load(), Failed: t.failed.Load(), Dropped: t.dropped.Load(), Retries: t.retries.Load(),
		Queued: len(t.queue),
	}
}

func (t *target) logf(format string, args ...any) {
	if t.cfg.Logf != nil {
		t.cfg.Logf(format, args...)
	}
}
