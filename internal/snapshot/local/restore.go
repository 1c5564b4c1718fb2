package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Restore implements snapshot.Driver. With opts.Target, the directory must
// be absent or empty. With opts.InPlace, cfg.Source is replaced: the
// snapshot is restored beside it, then swapped in by renames, so a failed
// restore leaves the volume as it was. The caller makes sure nothing uses
// the volume.
func (r *Repo) Restore(ctx context.Context, id string, opts snapshot.RestoreOptions) error {
	s, err := r.Find(ctx, id)
	if err != nil {
		return err
	}
	target := opts.Target
	if opts.InPlace {
		if r.cfg.Source == "" {
			return errors.New("restore in place: no source directory configured")
		}
		target = strings.TrimRight(r.cfg.Source, "/") + ".restore-" + s.ID
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
	x, err := r.loadIndex(ctx)
	if err != nil {
		return err
	}
	t, err := r.loadTree(ctx, x, s)
	if err != nil {
		return err
	}
	if err := r.restoreTree(ctx, x, t, target, opts.Progress); err != nil {
		return err
	}
	if !opts.InPlace {
		return nil
	}
	old := strings.TrimRight(r.cfg.Source, "/") + ".old-" + s.ID
	if err := os.Rename(r.cfg.Source, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("move the current volume aside: %w (the restored copy is in %s)", err, target)
	}
	if err := os.Rename(target, r.cfg.Source); err != nil {
		os.Rename(old, r.cfg.Source)
		return fmt.Errorf("move the restored volume in place: %w", err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("restored, but removing the previous volume %s: %w", old, err)
	}
	return nil
}

// piece is where one blob goes: a file and an offset.
type piece struct {
	file int // entry index
	off  int64
}

func (r *Repo) restoreTree(ctx context.Context, x *index, t *tree, target string, progress func(snapshot.Progress)) error {
	abs := func(e *entry) string { return filepath.Join(target, filepath.FromSlash(e.Path)) }
	// Plan: every blob needed, grouped by pack.
	need := map[ID]map[ID][]piece{} // pack -> blob -> pieces
	var total int64
	for i := range t.Entries {
		e := &t.Entries[i]
		if err := checkPath(e.Path); err != nil {
			return fmt.Errorf("%w: %v", errCorrupt, err)
		}
		var off int64
		for _, c := range e.Chunks {
			loc, ok := x.lookup(c)
			if !ok {
				return fmt.Errorf("%w: blob %s of %s is in no index", errCorrupt, c, e.Path)
			}
			if need[loc.Pack] == nil {
				need[loc.Pack] = map[ID][]piece{}
			}
			need[loc.Pack][c] = append(need[loc.Pack][c], piece{i, off})
			off += int64(loc.Raw)
		}
		total += e.Size
	}
	// Directories first, then empty files and symlinks; files with data
	// are created by whoever writes their first chunk.
	for i := range t.Entries {
		e := &t.Entries[i]
		var err error
		switch e.Type {
		case typeDir:
			err = os.MkdirAll(abs(e), 0o700)
		case typeSymlink:
			err = os.Symlink(e.Target, abs(e))
		case typeFile:
			if len(e.Chunks) == 0 {
				err = os.WriteFile(abs(e), nil, 0o600)
			}
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", abs(e), err)
		}
	}
	var done atomic.Int64
	if progress != nil {
		tk := time.NewTicker(time.Second)
		stop := make(chan struct{})
		defer func() { tk.Stop(); close(stop) }()
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					progress(snapshot.Progress{Bytes: done.Load(), TotalBytes: total})
				}
			}
		}()
	}
	packs := make([]ID, 0, len(need))
	for p := range need {
		packs = append(packs, p)
	}
	sort.Slice(packs, func(i, j int) bool { return string(packs[i][:]) < string(packs[j][:]) })
	var errMu sync.Mutex
	var problems []error
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Uploads)
	var codecs sync.Pool
	codecs.New = func() any { return newCodec() }
	for _, p := range packs {
		g.Go(func() error {
			cd := codecs.Get().(*codec)
			defer codecs.Put(cd)
			err := r.restorePack(gctx, cd, x, p, need[p], t, abs, &done)
			var ce corruptError
			if errors.As(err, &ce) {
				// Go on: report every damaged object, not the first one.
				errMu.Lock()
				problems = append(problems, err)
				errMu.Unlock()
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %d object(s) could not be restored:\n%w", errCorrupt, len(problems), errors.Join(problems...))
	}
	// Metadata last, directories deepest first: writing into a directory
	// changes its mtime.
	for i := len(t.Entries) - 1; i >= 0; i-- {
		e := &t.Entries[i]
		p := abs(e)
		mt := time.Unix(0, e.MTime)
		ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
		switch e.Type {
		case typeSymlink:
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("restore %s: %w", p, err)
			}
			continue
		case typeFile:
			if err := os.Truncate(p, e.Size); err != nil {
				return fmt.Errorf("restore %s: %w", p, err)
			}
		}
		if err := os.Chmod(p, fs.FileMode(e.Mode&0o777)|modeBits(e.Mode)); err != nil {
			return fmt.Errorf("restore %s: %w", p, err)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			return fmt.Errorf("restore %s: %w", p, err)
		}
	}
	return nil
}

func modeBits(m uint32) fs.FileMode {
	return fs.FileMode(m) & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// checkPath refuses paths that would leave the target.
func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
		return fmt.Errorf("tree entry %q leaves the target directory", p)
	}
	return nil
}

// corruptError is a missing or damaged object: restore and verify go on
// past it to name every one.
type corruptError struct{ msg string }

func (e corruptError) Error() string { return e.msg }

func (r *Repo) restorePack(ctx context.Context, cd *codec, x *index, pack ID, blobs map[ID][]piece, t *tree, abs func(*entry) string, done *atomic.Int64) error {
	name := "packs/" + pack.String()
	body, err := r.get(ctx, name)
	if errors.Is(err, errNoKey) {
		return corruptError{fmt.Sprintf("%s is missing (it holds %d blob(s) of this snapshot)", r.key(name), len(blobs))}
	}
	if err != nil {
		return err
	}
	// The pack's own table is not read: the index says where each blob
	// is, and each blob's hash is checked.
	var bad []string
	for id, pieces := range blobs {
		loc, _ := x.lookup(id)
		end := int(loc.Offset) + int(loc.Length)
		if end > len(body) {
			bad = append(bad, fmt.Sprintf("blob %s is cut short", id))
			continue
		}
		data, err := cd.open(blobEntry{ID: id, location: loc}, body[loc.Offset:end])
		if err != nil {
			bad = append(bad, err.Error()+" (file "+t.Entries[pieces[0].file].Path+")")
			continue
		}
		for _, pc := range pieces {
			p := abs(&t.Entries[pc.file])
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("restore %s: %w", p, err)
			}
			_, err = f.WriteAt(data, pc.off)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("restore %s: %w", p, err)
			}
			done.Add(int64(len(data)))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return corruptError{fmt.Sprintf("%s is damaged: %s", r.key(name), strings.Join(bad, "; "))}
	}
	return nil
}
