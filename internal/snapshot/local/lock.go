package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// lockInfo is the content of a locks/<nonce> object. The times in it are
// the writer's clock and only informative: staleness is judged from the
// object's LastModified, as the store reports it.
type lockInfo struct {
	Exclusive bool   `json:"exclusive"`
	Op        string `json:"op"`
	Nonce     string `json:"nonce"`
	Host      string `json:"host"`
	PID       int    `json:"pid"`
	// Machine names the kernel boot and PID namespace of PID: another
	// process with the same Machine can tell whether PID still runs.
	Machine   string    `json:"machine,omitempty"`
	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed"`
}

// staleSlack covers the one-second resolution of LastModified in HTTP
// dates: a lock is stale only when its age exceeds StaleLock by more.
const staleSlack = time.Second

// repoLock is a held lock. A keeper goroutine refreshes it with a
// conditional write (If-Match on the ETag of the lock's last write); when
// the lock is found gone or changed, or no refresh has succeeded for
// fenceAfter, the keeper cancels ctx. Whoever holds the lock does its
// work under ctx and calls check before each write that depends on the
// lock (an index, a snapshot, a deletion): a process that was paused or
// cut off past the stale time stops instead of writing.
type repoLock struct {
	r    *Repo
	name string
	info lockInfo
	// now is the store's time when the lock was taken: the LastModified
	// of its first write.
	now time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	crash  *lockCrashPoints

	mu       sync.Mutex
	etag     string
	lastSent time.Time // start of the last successful write
	lost     sync.Once

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// fenceAfter is how long after the start of its last successful refresh
// a lock holder stops trusting its lock. Another process judges the lock
// stale StaleLock after that write landed, measured by the store's clock;
// stopping LockRefresh/2 earlier (by the holder's monotonic clock, which
// no wall-clock skew affects) leaves that much for a write in flight.
func (r *Repo) fenceAfter() time.Duration {
	return r.cfg.StaleLock - r.cfg.LockRefresh/2
}

// lock takes a shared (create, restore, verify) or exclusive (prune,
// repair) lock. It writes its own lock first, with If-None-Match under a
// fresh random name, then reads every other lock: an exclusive lock
// conflicts with any live lock, a shared one with a live exclusive one.
// Two parties that race both see each other and back off, so at worst
// both fail, never both proceed. The returned lock's ctx is derived from
// ctx; the caller releases the lock.
func (r *Repo) lock(ctx context.Context, op string, exclusive bool) (*repoLock, error) {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	now := r.wallClock().UTC()
	l := &repoLock{r: r, crash: lockCrash(op), info: lockInfo{Exclusive: exclusive, Op: op, Nonce: hex.EncodeToString(nonce), Host: hostname(), PID: os.Getpid(), Machine: machineID(), Created: now, Refreshed: now}}
	l.name = "locks/" + l.info.Nonce
	sent := time.Now()
	body, _ := json.Marshal(l.info)
	etag, err := r.putETag(ctx, l.name, body, "*")
	l.crash.written.hit()
	if err != nil {
		return nil, fmt.Errorf("take the repository lock: %w", err)
	}
	l.etag, l.lastSent = etag, sent
	if r.onLockWritten != nil {
		r.onLockWritten(op)
	}
	// The store's own time: our lock's LastModified, just written.
	st, err := r.stat(ctx, l.name)
	if err != nil {
		r.delIf(context.WithoutCancel(ctx), l.name, etag)
		return nil, fmt.Errorf("take the repository lock: %w", err)
	}
	l.now = st.Modified
	if err := r.checkLocks(ctx, l.name, exclusive, st.Modified, l.crash); err != nil {
		r.delIf(context.WithoutCancel(ctx), l.name, etag)
		return nil, err
	}
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.keep(sent)
	return l, nil
}

// check returns nil while the lock is held, else why it is not (an error
// wrapping snapshot.ErrLockLost, or the caller's own cancellation). It
// measures the time since the last refresh itself, so that a process
// resuming from a pause stops here even before its keeper has run.
func (l *repoLock) check() error {
	l.mu.Lock()
	since := time.Since(l.lastSent)
	l.mu.Unlock()
	if fence := l.r.fenceAfter(); since > fence {
		l.lose(fmt.Errorf("%w: %s not refreshed for %s (others may take it as stale after %s)", snapshot.ErrLockLost, l.r.key(l.name), since.Round(time.Millisecond), l.r.cfg.StaleLock))
	}
	if l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

// keep refreshes the lock every LockRefresh until release, and cancels
// l.ctx when the lock is lost or fenceAfter passes without a refresh.
func (l *repoLock) keep(lastSent time.Time) {
	defer close(l.done)
	fence := l.r.fenceAfter()
	deadline := time.NewTimer(fence - time.Since(lastSent))
	defer deadline.Stop()
	t := time.NewTicker(l.r.cfg.LockRefresh)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-deadline.C:
			l.lose(fmt.Errorf("%w: %s not refreshed for %s (others may take it as stale after %s)", snapshot.ErrLockLost, l.r.key(l.name), fence, l.r.cfg.StaleLock))
			return
		case <-t.C:
			sent := time.Now()
			// No refresh may land after the fence: others could
			// have judged the lock stale by then.
			ctx, cancel := context.WithDeadline(context.Background(), lastSent.Add(fence))
			err := l.refresh(ctx)
			cancel()
			switch {
			case errors.Is(err, errExists), errors.Is(err, errNoKey):
				l.lose(fmt.Errorf("%w: %s was removed or replaced by another process, which took it as stale", snapshot.ErrLockLost, l.r.key(l.name)))
				return
			case err != nil:
				l.r.cfg.Logf("snapshot: refresh lock %s: %v (the operation stops if no refresh succeeds within %s of the last)", l.r.key(l.name), err, fence)
			default:
				lastSent = sent
				l.mu.Lock()
				l.lastSent = sent
				l.mu.Unlock()
				deadline.Reset(fence - time.Since(sent))
			}
		}
	}
}

func (l *repoLock) lose(err error) {
	l.lost.Do(func() {
		l.r.cfg.Logf("snapshot: %v; stopping %s", err, l.info.Op)
		l.cancel(err)
		if l.r.onLockLost != nil {
			l.r.onLockLost(l.info.Op)
		}
	})
}

// refresh rewrites the lock only if it is still the one written last: a
// lock that another process removed is never silently recreated.
func (l *repoLock) refresh(ctx context.Context) error {
	// Only the keeper writes info and etag; mu guards readers.
	l.mu.Lock()
	l.info.Refreshed = l.r.wallClock().UTC()
	body, _ := json.Marshal(l.info)
	etag := l.etag
	l.mu.Unlock()
	etag, err := l.r.putIfMatch(ctx, l.name, body, etag)
	l.crash.refreshed.hit()
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.etag = etag
	l.mu.Unlock()
	return nil
}

// release stops the keeper and removes the lock, if it is still ours.
func (l *repoLock) release() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.cancel(errors.New("lock released"))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l.mu.Lock()
		etag := l.etag
		l.mu.Unlock()
		l.r.delIf(ctx, l.name, etag)
		l.crash.released.hit()
	})
}

// wallClock is this machine's clock, which locks only record (for a
// person reading them): nothing is decided by it.
func (r *Repo) wallClock() time.Time {
	if r.clock != nil {
		return r.clock()
	}
	return time.Now()
}

// checkLocks removes stale locks and returns ErrLocked when a live one
// conflicts. own is the caller's lock, ignored; now is the store's time.
func (r *Repo) checkLocks(ctx context.Context, own string, exclusive bool, now time.Time, crash *lockCrashPoints) error {
	objs, err := r.list(ctx, "locks/")
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.Name == own {
			continue
		}
		age := now.Sub(o.Modified)
		var li lockInfo
		b, err := r.get(ctx, o.Name)
		if errors.Is(err, errNoKey) {
			continue
		}
		if err != nil {
			return err
		}
		readable := json.Unmarshal(b, &li) == nil
		why := ""
		switch {
		case age > r.cfg.StaleLock+staleSlack:
			why = fmt.Sprintf("not refreshed for %s by the store's clock", age.Round(time.Second))
		case readable && li.Machine != "" && li.Machine == machineID() && li.PID > 0 && !processAlive(li.PID):
			why = "its process is gone"
		}
		if why != "" {
			r.cfg.Logf("snapshot: removing stale lock %s of %s (pid %d on %s): %s", r.key(o.Name), li.Op, li.PID, li.Host, why)
			// Only the version judged: a lock refreshed meanwhile stays.
			err := r.delIf(ctx, o.Name, o.ETag)
			crash.staleRemoved.hit()
			if err != nil && !errors.Is(err, errExists) {
				return err
			}
			continue
		}
		if !readable {
			// Not ours to judge until it is stale: it may be a newer
			// conveyor's lock.
			li.Exclusive, li.Op = true, "unknown"
		}
		if exclusive || li.Exclusive {
			return fmt.Errorf("%w: %s by pid %d on %s, refreshed %s ago (%s); wait for it to finish (a lock not refreshed for %s is stale and removed)",
				snapshot.ErrLocked, li.Op, li.PID, li.Host, age.Round(time.Second), r.key(o.Name), r.cfg.StaleLock)
		}
	}
	return nil
}

// machineID names this kernel boot and PID namespace, "" when unknown:
// two processes with the same machineID see the same PIDs.
func machineID() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + "/" + ns
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
