package local

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Names inside the volume during an in-place restore.
const (
	stagingPrefix = ".conveyor-restore-"
	asidePrefix   = ".conveyor-old-"
)

// swapIn moves the volume's current content into an aside directory and
// the staged content in its place, each top-level name by a rename on the
// volume's own filesystem. On a failure every name moved goes back; the
// old content is removed only once the new one is all in place.
func (r *Repo) swapIn(staged string, t *tree, opts snapshot.RestoreOptions) (err error) {
	src := r.cfg.Source
	aside := filepath.Join(src, asidePrefix+filepath.Base(staged)[len(stagingPrefix):])
	os.RemoveAll(aside)
	if err := os.Mkdir(aside, 0o700); err != nil {
		return fmt.Errorf("restore in place: %w", err)
	}
	rename := func(from, to string) error {
		if r.onSwap != nil {
			if err := r.onSwap(from, to); err != nil {
				return err
			}
		}
		return os.Rename(from, to)
	}
	var movedOut, movedIn []string
	defer func() {
		if err == nil {
			return
		}
		// Roll back: new names out, old names in.
		var bad []string
		for i := len(movedIn) - 1; i >= 0; i-- {
			if e := os.Rename(filepath.Join(src, movedIn[i]), filepath.Join(staged, movedIn[i])); e != nil {
				bad = append(bad, e.Error())
			}
		}
		for i := len(movedOut) - 1; i >= 0; i-- {
			if e := os.Rename(filepath.Join(aside, movedOut[i]), filepath.Join(src, movedOut[i])); e != nil {
				bad = append(bad, e.Error())
			}
		}
		if len(bad) > 0 {
			err = fmt.Errorf("%w; rolling back also failed (the previous content is in %s, the restored one in %s): %s", err, aside, staged, strings.Join(bad, "; "))
			return
		}
		os.RemoveAll(staged)
		os.Remove(aside)
		err = fmt.Errorf("%w; the volume is as it was", err)
	}()
	// The restored content is on the disk before anything is moved: a
	// crash after the swap must not find it half written back, with the
	// old content gone.
	if err := r.syncFS(staged); err != nil {
		return fmt.Errorf("restore in place: sync the restored content: %w", err)
	}
	cur, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("restore in place: %w", err)
	}
	for _, d := range cur {
		n := d.Name()
		if strings.HasPrefix(n, stagingPrefix) || strings.HasPrefix(n, asidePrefix) {
			continue
		}
		if err := rename(filepath.Join(src, n), filepath.Join(aside, n)); err != nil {
			return fmt.Errorf("restore in place: move %s aside: %w", n, err)
		}
		movedOut = append(movedOut, n)
	}
	news, err := os.ReadDir(staged)
	if err != nil {
		return fmt.Errorf("restore in place: %w", err)
	}
	for _, d := range news {
		n := d.Name()
		if err := rename(filepath.Join(staged, n), filepath.Join(src, n)); err != nil {
			return fmt.Errorf("restore in place: move %s in: %w", n, err)
		}
		movedIn = append(movedIn, n)
	}
	// The volume's root takes the snapshot's root metadata.
	for i := range t.Entries {
		if e := &t.Entries[i]; e.Path == "." {
			fd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("restore in place: %w", err)
			}
			err = finishDir(fd, t, e, newOwners(t, opts.IgnoreOwner), r.cfg.Logf)
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("restore in place: %s: %w", src, err)
			}
		}
	}
	os.Remove(staged)
	// The renames are on the disk before the old content goes.
	if err := r.syncFS(src); err != nil {
		r.cfg.Logf("snapshot: restored in place, but syncing %s failed (%v): the previous content is kept in %s", src, err, aside)
		return nil
	}
	if err := os.RemoveAll(aside); err != nil {
		r.cfg.Logf("snapshot: restored in place, but removing the previous content %s: %v", aside, err)
	}
	return nil
}

// syncFS writes everything cached for dir's filesystem to the disk
// (syncfs(2)).
func (r *Repo) syncFS(dir string) error {
	if r.onSync != nil {
		if err := r.onSync(dir); err != nil {
			return err
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}
