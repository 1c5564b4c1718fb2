package local

import (
	"context"
	"testing"
	"time"
)

// Paused, the pool starts nothing; WaitIdle waits for the running job;
// Resume starts the queued ones.
func TestPauseResume(t *testing.T) {
	t.Parallel()
	started := make(chan string, 4)
	release := make(chan struct{})
	d := New(func(_ context.Context, id string) error {
		started <- id
		<-release
		return nil
	}, Config{Workers: 2})
	defer d.Close()
	a, b := "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	d.Dispatch(context.Background(), a)
	<-started
	d.Pause()
	d.Dispatch(context.Background(), b)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if err := d.WaitIdle(ctx); err == nil {
		t.Fatal("idle while a job runs")
	}
	cancel()
	idle := make(chan error, 1)
	go func() { idle <- d.WaitIdle(context.Background()) }()
	release <- struct{}{}
	if err := <-idle; err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-started:
		t.Fatalf("%s started while paused", id)
	default:
	}
	d.Resume()
	if id := <-started; id != b {
		t.Fatalf("started %s, want %s", id, b)
	}
	close(release)
}
