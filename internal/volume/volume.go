package volume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Volume is an opened volume directory.
type Volume struct {
	root  string
	id    string
	owner string // id + "/" + a nonce of this Open
}

// Open prepares the volume at root (created if absent) and returns it. The
// root must be absolute: the embedded S3 server changes the process's
// working directory.
func Open(root string) (*Volume, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("volume path %q must be absolute", root)
	}
	for _, d := range []string{root, filepath.Join(root, "work"), filepath.Join(root, "logs"), filepath.Join(root, "locks")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("create volume directory: %w", err)
		}
	}
	id, err := loadOrCreateID(filepath.Join(root, "volume-id"))
	if err != nil {
		return nil, err
	}
	nonce, err := randomHex(8)
	if err != nil {
		return nil, err
	}
	return &Volume{root: root, id: id, owner: id + "/" + nonce}, nil
}

// Reidentify gives the volume at root a new identity and returns it: a
// restored copy of a volume is another volume, and must not pass for the
// original (whose jobs and leases name the original's identity). Holder
// files of job locks, which name processes of the original's machine, are
// removed. Call it before the copy is opened.
func Reidentify(root string) (string, error) {
	if !filepath.IsAbs(root) {
		return "", fmt.Errorf("volume path %q must be absolute", root)
	}
	path := filepath.Join(root, "volume-id")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("remove old volume id: %w", err)
	}
	holders, err := filepath.Glob(filepath.Join(root, "locks", "*.holder*"))
	if err != nil {
		return "", err
	}
	for _, h := range holders {
		if err := os.Remove(h); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("remove stale lock holder: %w", err)
		}
	}
	return loadOrCreateID(path)
}

func randomHex(n int) (string, error) {
	r := make([]byte, n)
	if _, err := rand.Read(r); err != nil {
		return "", err
	}
	return hex.EncodeToString(r), nil
}

// loadOrCreateID gives the volume a stable identity: it survives restarts
// and in-place restores, and is how a worker recognises jobs interrupted on
// this volume.
func loadOrCreateID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read volume id: %w", err)
	}
	r, err := randomHex(8)
	if err != nil {
		return "", err
	}
	id := "vol-" + r
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("write volume id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write volume id: %w", err)
	}
	return id, nil
}

// Root is the volume's directory.
func (v *Volume) Root() string { return v.root }

// ID is the volume's stable identity: it survives restarts and travels
// with snapshots of the volume in place; a restored clone gets a new one
// (Reidentify).
func (v *Volume) ID() string { return v.id }

// Owner names one process on one volume: "<volume ID>/<nonce>", the nonce
// random for each Open. It is what a worker claims jobs as, so two
// processes sharing a volume (or a process and its restart) never pass for
// each other; ID tells which owners ran on the same volume.
func (v *Volume) Owner() string { return v.owner }

// WorkDir is the job's directory on the volume: input/, output/ and
// scratch/ live under it.
func (v *Volume) WorkDir(id string) (string, error) {
	if err := job.CheckID(id); err != nil {
		return "", err
	}
	return filepath.Join(v.root, "work", id), nil
}

// LogPath is the job's log file.
func (v *Volume) LogPath(id string) (string, error) {
	if err := job.CheckID(id); err != nil {
		return "", err
	}
	return filepath.Join(v.root, "logs", id+".log"), nil
}

// ErrLocked is returned by LockJob when another process on this volume
// holds the job.
var ErrLocked = errors.New("job is locked by another process on this volume")

// Lock is a held per-job lock.
type Lock struct {
	f          *os.File
	holderPath string // locks/<job>.holder; empty for a slot

	mu sync.Mutex
	h  holder
	// inherited is set once a processor group was recorded: from then on
	// the processor holds the lock too, and Unlock leaves it to them.
	inherited bool
}

// LockJob takes the job's lock without waiting. The lock is an flock: the
// kernel drops it when the last process holding it dies, so a job whose
// lock can be taken is run by nobody on this volume, whatever its record
// says. An external processor inherits the lock (Lock.File), so it stays
// taken while anything the processor started lives.
//
// When the lock is taken and the holder recorded beside it is alive,
// LockJob returns ErrLocked. When that holder is dead (killed, out of
// memory), the processor it left behind still holds the lock: LockJob kills
// the process group recorded with SetProcessGroup, waits a few seconds for
// the lock to be free and takes it; when it stays taken the error wraps
// ErrLocked and says what to do.
func (v *Volume) LockJob(id string) (*Lock, error) {
	if err := job.CheckID(id); err != nil {
		return nil, err
	}
	lockPath := filepath.Join(v.root, "locks", id+".lock")
	holderPath := filepath.Join(v.root, "locks", id+".holder")
	l, err := v.tryLock(lockPath, holderPath)
	if errors.Is(err, ErrLocked) {
		return v.reap(lockPath, holderPath)
	}
	return l, err
}

// tryLock takes the lock at lockPath without waiting, and records this
// process as its holder.
func (v *Volume) tryLock(lockPath, holderPath string) (*Lock, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open job lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock job: %w", err)
	}
	l := &Lock{f: f, holderPath: holderPath, h: self()}
	if err := writeHolder(holderPath, l.h); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// File is the open lock file, for an external processor to inherit
// (processor.Env.Lock): the flock then stays held while the processor or
// anything it started lives, even after this process died. The caller must
// not close it; Unlock does.
func (l *Lock) File() *os.File { return l.f }

// SetProcessGroup records the process group of the processor that runs the
// job, so that a LockJob after this process died can kill what is left of
// it. Call it once the processor started (processor.Env.Started); pgid 0
// clears it.
func (l *Lock) SetProcessGroup(pgid int) error {
	if l.holderPath == "" {
		return errors.New("not a job lock")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.h.PGID = pgid
	if pgid > 0 {
		l.inherited = true
	}
	return writeHolder(l.holderPath, l.h)
}

// Unlock releases the lock. The lock file stays: removing it would let two
// processes lock two different files of the same name. The holder file
// goes, while the lock is still held, so it never names a later holder.
//
// A child another goroutine is starting holds a copy of every descriptor
// until it executes, and an flock lasts while any copy is open: closed at
// that moment, the lock would outlive Unlock, and the next LockJob in this
// process would find its own job "running in another process". So the
// lock is released explicitly when no processor was given it, and the file
// is closed under syscall.ForkLock, which a fork holds until its child has
// executed (and so closed the copy). A lock a processor inherited is left
// to the processor: whatever it started keeps it while it lives.
func (l *Lock) Unlock() {
	l.mu.Lock()
	if l.holderPath != "" {
		_ = os.Remove(l.holderPath)
	}
	if !l.inherited {
		_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	}
	l.mu.Unlock()
	syscall.ForkLock.RLock()
	l.f.Close()
	syscall.ForkLock.RUnlock()
}

// FreeBytes is the space left on the volume's filesystem for this user.
func (v *Volume) FreeBytes() (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(v.root, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", v.root, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// CheckSpace returns an error naming what to do when fewer than need bytes
// (plus a reserve of 64 MiB for logs) are free.
func (v *Volume) CheckSpace(need int64) error {
	free, err := v.FreeBytes()
	if err != nil {
		return err
	}
	const reserve = 64 << 20
	if need < 0 {
		need = 0
	}
	if free < uint64(need)+reserve {
		return fmt.Errorf("volume %s has %d MiB free but the job needs about %d MiB: free space or grow the volume", v.root, free>>20, (uint64(need)+reserve)>>20)
	}
	return nil
}

// Slot is one of a volume's bounded number of job slots.
type Slot struct{ l *Lock }

// Release gives the slot back.
func (s *Slot) Release() { s.l.Unlock() }

// slotPoll is how often AcquireSlot retries while every slot is taken.
var slotPoll = 200 * time.Millisecond

// AcquireSlot waits until one of n job slots of the volume is free and
// takes it, or until ctx ends. Separate `conveyor worker run` processes (one
// per SSM command) share the volume's n slots, so a burst of commands runs
// at most n processors at once. The slots are flocks: a crashed process's
// slot is free again.
func (v *Volume) AcquireSlot(ctx context.Context, n int) (*Slot, error) {
	if n < 1 {
		n = 1
	}
	for {
		for i := 0; i < n; i++ {
			f, err := os.OpenFile(filepath.Join(v.root, "locks", fmt.Sprintf("slot-%d.lock", i)), os.O_CREATE|os.O_RDWR, 0o640)
			if err != nil {
				return nil, fmt.Errorf("open slot lock: %w", err)
			}
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
				return &Slot{l: &Lock{f: f}}, nil
			}
			f.Close()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("all %d job slots of volume %s stayed busy: %w", n, v.root, ctx.Err())
		case <-time.After(slotPoll):
		}
	}
}
