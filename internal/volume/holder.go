package volume

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// A job lock is an flock, and an external processor inherits it (see
// Lock.File), so it outlives a worker that was killed while the processor
// or anything the processor started still runs. To tell such leftovers from
// a live worker, LockJob records the lock's holder beside the lock, in
// locks/<job>.holder: the holder's PID, its start time (so a reused PID is
// not mistaken for it) and, once the processor started, the processor's
// process group.

// reapWait bounds how long LockJob waits for the lock after killing the
// process group a dead holder left; reapPoll is how often it looks.
// Variables so tests can change them.
var (
	reapWait = 5 * time.Second
	reapPoll = 20 * time.Millisecond
)

// holder is the content of a holder file.
type holder struct {
	PID   int
	Start uint64 // clock ticks since boot (/proc/<pid>/stat field 22)
	PGID  int    // the processor's process group; 0 until one started
}

func (h holder) String() string { return fmt.Sprintf("%d %d %d\n", h.PID, h.Start, h.PGID) }

func readHolder(path string) (holder, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return holder{}, err
	}
	var h holder
	if _, err := fmt.Sscanf(string(b), "%d %d %d\n", &h.PID, &h.Start, &h.PGID); err != nil {
		return holder{}, fmt.Errorf("read %s: %w", path, err)
	}
	return h, nil
}

// writeHolder replaces the holder file in one rename, so a reader never
// sees half of it. Only the lock's holder writes it.
func writeHolder(path string, h holder) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(h.String()), 0o640); err != nil {
		return fmt.Errorf("record the job lock's holder: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("record the job lock's holder: %w", err)
	}
	return nil
}

// self describes this process as a holder.
func self() holder {
	start, _, _ := procStat(os.Getpid())
	return holder{PID: os.Getpid(), Start: start}
}

// holderAlive reports whether the process h names still runs. When that
// cannot be told (no /proc), the holder is taken to be alive: nothing is
// ever killed on a guess.
func holderAlive(h holder) bool {
	start, state, err := procStat(h.PID)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false
	case err != nil:
		return true
	case state == 'Z' || state == 'X':
		return false // exited; its parent has not reaped it yet
	case h.Start != 0 && start != h.Start:
		return false // the PID now names another process
	}
	return true
}

// reap runs when the job's lock is taken. If the holder recorded beside it
// is dead, what holds the lock is what its processor left behind: the
// recorded process group is killed, and the lock taken once it is free
// (bounded by reapWait). A live holder, an unknown one, or leftovers that
// do not go, give ErrLocked.
func (v *Volume) reap(lockPath, holderPath string) (*Lock, error) {
	h, err := readHolder(holderPath)
	if err != nil || holderAlive(h) {
		return nil, ErrLocked
	}
	// A process group ID can be reused once the whole group is gone: kill
	// the group only while one of its members holds this very lock.
	if h.PGID > 1 && h.PGID != syscall.Getpgrp() && groupHoldsFile(h.PGID, lockPath) {
		_ = syscall.Kill(-h.PGID, syscall.SIGKILL)
	}
	deadline := time.Now().Add(reapWait)
	for {
		l, err := v.tryLock(lockPath, holderPath)
		if !errors.Is(err, ErrLocked) {
			return l, err
		}
		if cur, err := readHolder(holderPath); err == nil && cur != h {
			return nil, ErrLocked // another process reaped it first and holds it now
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: its holder (pid %d) is gone, but processes it started outside process group %d still hold %s; find them with 'fuser %s' and stop them",
				ErrLocked, h.PID, h.PGID, lockPath, lockPath)
		}
		time.Sleep(reapPoll)
	}
}
