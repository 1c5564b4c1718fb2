package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Schedule says when snapshots are taken: every Every, or each day at
// Daily ("HH:MM", in the clock's location). Exactly one is set.
type Schedule struct {
	Every time.Duration
	Daily string
}

// Off reports whether the schedule takes no snapshot (the default).
func (s Schedule) Off() bool { return s.Every == 0 && s.Daily == "" }

// MinEvery is the shortest interval allowed.
const MinEvery = time.Minute

// Validate checks the schedule.
func (s Schedule) Validate() error {
	if s.Every != 0 && s.Daily != "" {
		return errors.New("snapshot schedule: set either every or daily, not both")
	}
	if s.Every != 0 && s.Every < MinEvery {
		return fmt.Errorf("snapshot every must be at least %s, got %s", MinEvery, s.Every)
	}
	if s.Daily != "" {
		if _, _, err := parseHHMM(s.Daily); err != nil {
			return err
		}
	}
	return nil
}

func parseHHMM(v string) (int, int, error) {
	h, m, ok := strings.Cut(v, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 || len(m) != 2 {
		return 0, 0, fmt.Errorf("snapshot daily %q is not a time of day; use HH:MM, like 03:00", v)
	}
	return hh, mm, nil
}

// Next is the first time strictly after t at which a snapshot is due.
func (s Schedule) Next(t time.Time) time.Time {
	if s.Every > 0 {
		return t.Add(s.Every)
	}
	hh, mm, err := parseHHMM(s.Daily)
	if err != nil {
		return time.Time{}
	}
	n := time.Date(t.Year(), t.Month(), t.Day(), hh, mm, 0, 0, t.Location())
	if !n.After(t) {
		n = time.Date(t.Year(), t.Month(), t.Day()+1, hh, mm, 0, 0, t.Location())
	}
	return n
}

// Clock is the scheduler's view of time; tests pass a fake.
type Clock interface {
	Now() time.Time
	// After sends once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// Scheduler runs Run at each time the Schedule gives, one run at a time.
// A run that ends after the next due time is not repeated to catch up.
type Scheduler struct {
	Schedule Schedule
	Clock    Clock // default RealClock
	// Run takes one snapshot and applies retention.
	Run func(ctx context.Context) error
	// OnRun, if set, is called after each run with its error.
	OnRun func(at time.Time, err error)

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Start starts the schedule in the background. It returns an error for an
// invalid or empty schedule.
func (s *Scheduler) Start(ctx context.Context) error {
	if err := s.Schedule.Validate(); err != nil {
		return err
	}
	if s.Schedule.Off() {
		return errors.New("snapshot schedule is off: set every or daily")
	}
	if s.Run == nil {
		return errors.New("scheduler has no Run function")
	}
	if s.Clock == nil {
		s.Clock = RealClock
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.loop(ctx)
	return nil
}

func (s *Scheduler) loop(ctx context.Context) {
	defer close(s.done)
	for {
		now := s.Clock.Now()
		next := s.Schedule.Next(now)
		select {
		case <-ctx.Done():
			return
		case <-s.Clock.After(next.Sub(now)):
		}
		err := s.Run(ctx)
		if s.OnRun != nil {
			s.OnRun(next, err)
		}
	}
}

// Stop ends the schedule and waits for a running snapshot to return (it is
// cancelled).
func (s *Scheduler) Stop() {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
			<-s.done
		}
	})
}
