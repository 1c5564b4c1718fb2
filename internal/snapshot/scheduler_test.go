package snapshot

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeClock advances only when told; After registers a waiter the test
// can see.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	added   chan time.Duration // every After call
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, added: make(chan time.Duration, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	c.mu.Unlock()
	c.added <- d
	return ch
}

// advance moves time to t and fires the waiters due.
func (c *fakeClock) advance(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	var left []waiter
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t
		} else {
			left = append(left, w)
		}
	}
	c.waiters = left
}

func TestScheduleNext(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("X", 3600)
	at := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, loc) }
	tests := []struct {
		s    Schedule
		from time.Time
		want time.Time
	}{
		{Schedule{Every: 24 * time.Hour}, at(1, 10, 0), at(2, 10, 0)},
		{Schedule{Every: time.Hour}, at(1, 23, 30), at(2, 0, 30)},
		{Schedule{Daily: "03:00"}, at(1, 2, 59), at(1, 3, 0)},
		{Schedule{Daily: "03:00"}, at(1, 3, 0), at(2, 3, 0)},
		{Schedule{Daily: "03:00"}, at(1, 10, 0), at(2, 3, 0)},
		{Schedule{Daily: "23:45"}, at(30, 23, 50), time.Date(2026, 12, 1, 23, 45, 0, 0, loc)},
	}
	for _, tc := range tests {
		if got := tc.s.Next(tc.from); !got.Equal(tc.want) {
			t.Errorf("%+v.Next(%s) = %s, want %s", tc.s, tc.from, got, tc.want)
		}
	}
}

func TestScheduleValidate(t *testing.T) {
	t.Parallel()
	bad := []Schedule{{Every: time.Second}, {Daily: "3am"}, {Daily: "24:00"}, {Daily: "03:7"}, {Every: time.Hour, Daily: "03:00"}}
	for _, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
	for _, s := range []Schedule{{}, {Every: time.Hour}, {Daily: "00:00"}, {Daily: "23:59"}} {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

func TestSchedulerRunsOnTime(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC)
	clock := newFakeClock(start)
	runs := make(chan time.Time, 4)
	results := make(chan error, 4)
	s := &Scheduler{
		Schedule: Schedule{Daily: "03:00"},
		Clock:    clock,
		Run: func(ctx context.Context) error {
			runs <- clock.Now()
			return errors.New("disk full")
		},
		OnRun: func(_ time.Time, err error) { results <- err },
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()

	if d := <-clock.added; d != 2*time.Hour {
		t.Fatalf("first wait %s, want 2h (01:00 -> 03:00)", d)
	}
	clock.advance(start.Add(time.Hour)) // 02:00: not yet
	select {
	case <-runs:
		t.Fatal("ran before 03:00")
	default:
	}
	clock.advance(start.Add(2 * time.Hour))
	if got := <-runs; !got.Equal(start.Add(2 * time.Hour)) {
		t.Fatalf("ran at %s", got)
	}
	if err := <-results; err == nil || err.Error() != "disk full" {
		t.Fatalf("OnRun got %v", err)
	}
	// An error does not stop the schedule: the next is a day later.
	if d := <-clock.added; d != 24*time.Hour {
		t.Fatalf("second wait %s, want 24h", d)
	}
	clock.advance(start.Add(26 * time.Hour))
	<-runs
}

func TestSchedulerStopCancelsRun(t *testing.T) {
	t.Parallel()
	clock := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	started := make(chan struct{})
	s := &Scheduler{Schedule: Schedule{Every: time.Hour}, Clock: clock, Run: func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-clock.added
	clock.advance(clock.Now().Add(time.Hour))
	<-started
	s.Stop() // returns only once Run saw the cancellation
}

func TestSchedulerOff(t *testing.T) {
	t.Parallel()
	s := &Scheduler{Run: func(context.Context) error { return nil }}
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("started with no schedule")
	}
}
