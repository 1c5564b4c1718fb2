package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeQuiescer records pauses; WaitIdle waits for idle to be closed.
type fakeQuiescer struct {
	mu      sync.Mutex
	paused  bool
	resumed chan struct{}
	idle    chan struct{}
}

func (q *fakeQuiescer) Pause() { q.mu.Lock(); q.paused = true; q.mu.Unlock() }
func (q *fakeQuiescer) Resume() {
	q.mu.Lock()
	q.paused = false
	q.mu.Unlock()
	q.resumed <- struct{}{}
}
func (q *fakeQuiescer) isPaused() bool { q.mu.Lock(); defer q.mu.Unlock(); return q.paused }
func (q *fakeQuiescer) WaitIdle(ctx context.Context) error {
	select {
	case <-q.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func setupQuiesce(t *testing.T) (*fakeQuiescer, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "q") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	q := &fakeQuiescer{resumed: make(chan struct{}, 4), idle: make(chan struct{})}
	path := filepath.Join(dir, "control.sock")
	s, err := ListenQuiesce(path, q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
	return q, path
}

func TestQuiescePausesUntilResume(t *testing.T) {
	t.Parallel()
	q, path := setupQuiesce(t)
	close(q.idle)
	resume, err := RequestQuiesce(context.Background(), path, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !q.isPaused() {
		t.Fatal("not paused")
	}
	resume()
	<-q.resumed
}

func TestQuiesceTimeoutResumes(t *testing.T) {
	t.Parallel()
	q, path := setupQuiesce(t)
	// Jobs never finish: the request fails and the pipeline resumes.
	_, err := RequestQuiesce(context.Background(), path, 50*time.Millisecond)
	if err == nil {
		t.Fatal("quiesce succeeded with busy jobs")
	}
	<-q.resumed
}

func TestQuiesceNoPipeline(t *testing.T) {
	t.Parallel()
	_, err := RequestQuiesce(context.Background(), filepath.Join(t.TempDir(), "none.sock"), time.Second)
	if !errors.Is(err, ErrNoPipeline) {
		t.Fatalf("err = %v, want ErrNoPipeline", err)
	}
}
