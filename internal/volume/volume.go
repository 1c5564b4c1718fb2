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
	"syscall"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Volume is an opened volume directory.
type Volume struct {
	root string
	id   string
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
	return &Volume{root: root, id: id}, nil
}

// loadOrCreateID gives the volume a stable identity: it survives restarts
// and travels with snapshots, and is how a worker recognises its own
// interrupted jobs.
func loadOrCreateID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read volume id: %w", err)
	}
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := "vol-" + hex.EncodeToString(r[:])
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

// ID is the volume's stable identity, used as the owner of running jobs.
func (v *Volume) ID() string { return v.id }

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
type Lock struct{ f *os.File }

// LockJob takes the job's lock without waiting. The lock is an flock: the
// kernel drops it when its process dies, so a job whose lock can be taken
// is run by nobody on this volume, whatever its record says.
func (v *Volume) LockJob(id string) (*Lock, error) {
	if err := job.CheckID(id); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(v.root, "locks", id+".lock"), os.O_CREATE|os.O_RDWR, 0o640)
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
	return &Lock{f: f}, nil
}

// Unlock releases the lock. The lock file stays: removing it would let two
// processes lock two different files of the same name.
func (l *Lock) Unlock() { l.f.Close() }

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
