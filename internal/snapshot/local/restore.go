package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Restore implements snapshot.Driver. With opts.Target, the directory must
// be absent or empty. With opts.InPlace, cfg.Source is replaced: the
// snapshot is restored into a staging directory inside it (on the
// volume's own filesystem, even when the volume is a mount point), then
// the current content is moved aside and the restored one in, by renames;
// the old content is removed only once the new one is complete, and any
// failure puts it back. The caller makes sure nothing uses the volume.
func (r *Repo) Restore(ctx context.Context, id string, opts snapshot.RestoreOptions) error {
	defer tightGC()()
	// A shared lock: no prune deletes what is being read.
	lk, err := r.lock(ctx, "restore", false)
	if err != nil {
		return err
	}
	defer lk.release()
	ctx = lk.ctx
	s, err := r.Find(ctx, id)
	if err != nil {
		return err
	}
	target := opts.Target
	if opts.InPlace {
		if r.cfg.Source == "" || !filepath.IsAbs(r.cfg.Source) {
			return errors.New("restore in place: no absolute source directory configured")
		}
		if err := os.MkdirAll(r.cfg.Source, 0o700); err != nil {
			return err
		}
		target = filepath.Join(r.cfg.Source, stagingPrefix+s.ID)
		os.RemoveAll(target) // an earlier attempt's leftovers
	}
	if target == "" || !filepath.IsAbs(target) {
		return fmt.Errorf("restore target %q must be an absolute directory", target)
	}
	if des, err := os.ReadDir(target); err == nil && len(des) > 0 {
		return fmt.Errorf("restore target %s is not empty; choose a new directory, or restore in place", target)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", target, err)
	}
	x, err := r.loadLookupIndex(ctx) // the blobs' locations, no pack tables
	if err != nil {
		return err
	}
	t, err := r.restoreTree(ctx, x, s, target, opts)
	if lerr := lk.check(); err != nil && lerr != nil {
		err = fmt.Errorf("%w (%v)", lerr, err)
	}
	if err != nil {
		if opts.InPlace {
			os.RemoveAll(target)
		}
		return err
	}
	if !opts.InPlace {
		return nil
	}
	return r.swapIn(target, t, opts)
}
