package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// lockInfo is the content of a locks/<id> object.
type lockInfo struct {
	Exclusive bool      `json:"exclusive"`
	Op        string    `json:"op"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed"`
}

// repoLock is a held lock, refreshed in the background until release.
type repoLock struct {
	r    *Repo
	name string
	info lockInfo
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// lock takes a shared (create) or exclusive (prune) lock. Create may run
// beside another create, never beside a prune: prune must not delete what
// a snapshot being taken is about to reference. Both parties write their
// lock, then look for conflicting ones: if they race, both see each other
// and back off, so at worst both fail, never both proceed.
func (r *Repo) lock(ctx context.Context, op string, exclusive bool) (*repoLock, error) {
	if err := r.checkLocks(ctx, "", exclusive); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	l := &repoLock{r: r, name: "locks/" + newID(), info: lockInfo{Exclusive: exclusive, Op: op, Host: hostname(), PID: os.Getpid(), Created: now, Refreshed: now}}
	if err := l.write(ctx); err != nil {
		return nil, err
	}
	if err := r.checkLocks(ctx, l.name, exclusive); err != nil {
		r.del(context.WithoutCancel(ctx), l.name)
		return nil, err
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.refresh()
	return l, nil
}

func (l *repoLock) write(ctx context.Context) error {
	b, _ := json.Marshal(l.info)
	return l.r.put(ctx, l.name, b, false)
}

func (l *repoLock) refresh() {
	defer close(l.done)
	t := time.NewTicker(l.r.cfg.LockRefresh)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.info.Refreshed = time.Now().UTC()
			ctx, cancel := context.WithTimeout(context.Background(), l.r.cfg.LockRefresh)
			if err := l.write(ctx); err != nil {
				l.r.cfg.Logf("snapshot: refresh lock %s: %v", l.r.key(l.name), err)
			}
			cancel()
		}
	}
}

// release stops the refresh and removes the lock.
func (l *repoLock) release() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l.r.del(ctx, l.name)
	})
}

// checkLocks removes stale locks and returns ErrLocked when a live one
// conflicts. own is the caller's lock, ignored.
func (r *Repo) checkLocks(ctx context.Context, own string, exclusive bool) error {
	objs, err := r.list(ctx, "locks/")
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.Name == own {
			continue
		}
		b, err := r.get(ctx, o.Name)
		if errors.Is(err, errNoKey) {
			continue
		}
		if err != nil {
			return err
		}
		var li lockInfo
		if err := json.Unmarshal(b, &li); err != nil {
			r.cfg.Logf("snapshot: removing unreadable lock %s", r.key(o.Name))
			r.del(ctx, o.Name)
			continue
		}
		if why := r.stale(li); why != "" {
			r.cfg.Logf("snapshot: removing stale lock %s of %s (pid %d on %s, since %s): %s", r.key(o.Name), li.Op, li.PID, li.Host, li.Created.Format(time.RFC3339), why)
			if err := r.del(ctx, o.Name); err != nil {
				return err
			}
			continue
		}
		if exclusive || li.Exclusive {
			return fmt.Errorf("%w: %s by pid %d on %s since %s (%s); wait for it to finish, or remove %s if that process is gone",
				snapshot.ErrLocked, li.Op, li.PID, li.Host, li.Created.Format(time.RFC3339), r.key(o.Name), r.key(o.Name))
		}
	}
	return nil
}

// stale says why a lock is stale, or "".
func (r *Repo) stale(li lockInfo) string {
	if age := time.Since(li.Refreshed); age > r.cfg.StaleLock {
		return fmt.Sprintf("not refreshed for %s", age.Round(time.Second))
	}
	if li.Host == hostname() && li.PID > 0 && !processAlive(li.PID) {
		return "its process is gone"
	}
	return ""
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err == nil || errors.Is(err, syscall.EPERM) {
		// A zombie still answers: check /proc when it is there.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			f := strings.Fields(string(b))
			if i := strings.LastIndex(string(b), ")"); i > 0 {
				f = strings.Fields(string(b[i+1:]))
			}
			if len(f) > 0 && f[0] == "Z" {
				return false
			}
		}
		return true
	}
	return false
}
