package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

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

// maxOpenFiles bounds the files kept open between two of their chunks;
// past it, a file is closed after each write and opened again.
const maxOpenFiles = 256

func (r *Repo) restoreTree(ctx context.Context, x *index, t *tree, target string, progress func(snapshot.Progress)) error {
	abs := func(e *entry) string { return filepath.Join(target, filepath.FromSlash(e.Path)) }
	// Plan: every blob needed, grouped by pack; each pack ranked by the
	// first file it serves, so that files are completed (and closed) one
	// after another rather than all kept open.
	need := map[ID]map[ID][]piece{} // pack -> blob -> pieces
	rank := map[ID]int{}
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
				rank[loc.Pack] = i
			}
			need[loc.Pack][c] = append(need[loc.Pack][c], piece{i, off})
			off += int64(loc.Raw)
		}
		total += e.Size
	}
	// Directories first, then empty files and symlinks with their
	// metadata; files with data are created by whoever writes their first
	// chunk and finished by whoever writes their last.
	for i := range t.Entries {
		e := &t.Entries[i]
		p := abs(e)
		var err error
		switch e.Type {
		case typeDir:
			switch err = os.Mkdir(p, 0o700); {
			case errors.Is(err, fs.ErrNotExist):
				err = os.MkdirAll(p, 0o700)
			case errors.Is(err, fs.ErrExist):
				if st, serr := os.Lstat(p); serr == nil && st.IsDir() {
					err = nil
				}
			}
		case typeSymlink:
			if err = os.Symlink(e.Target, p); err == nil {
				err = unix.UtimesNanoAt(unix.AT_FDCWD, p, timespecs(e.MTime), unix.AT_SYMLINK_NOFOLLOW)
			}
		case typeFile:
			if len(e.Chunks) == 0 {
				var fd int
				if fd, err = unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600); err == nil {
					err = finishFile(fd, e, 0)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", p, err)
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
	sort.Slice(packs, func(i, j int) bool {
		if rank[packs[i]] != rank[packs[j]] {
			return rank[packs[i]] < rank[packs[j]]
		}
		return string(packs[i][:]) < string(packs[j][:])
	})
	w := &fileWriter{t: t, abs: abs, files: make([]openFile, len(t.Entries)), maxOpen: int64(r.maxOpen)}
	if w.maxOpen <= 0 {
		w.maxOpen = maxOpenFiles
	}
	for i := range t.Entries {
		w.files[i].left = len(t.Entries[i].Chunks)
	}
	defer w.closeAll()
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
			err := r.restorePack(gctx, cd, x, p, need[p], w, &done)
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
	// Directories last: creating an entry in a directory changes its
	// mtime, and a read-only one could not have been written into.
	for i := len(t.Entries) - 1; i >= 0; i-- {
		e := &t.Entries[i]
		if e.Type != typeDir {
			continue
		}
		p := abs(e)
		if err := os.Chmod(p, fs.FileMode(e.Mode&0o777)|modeBits(e.Mode)); err != nil {
			return fmt.Errorf("restore %s: %w", p, err)
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, timespecs(e.MTime), 0); err != nil {
			return fmt.Errorf("restore %s: %w", p, err)
		}
	}
	return nil
}

func timespecs(mtime int64) []unix.Timespec {
	ts := unix.NsecToTimespec(mtime)
	return []unix.Timespec{ts, ts}
}

// unixMode is the chmod argument of an entry's mode.
func unixMode(m uint32) uint32 {
	u := m & 0o777
	fm := fs.FileMode(m)
	if fm&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if fm&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if fm&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}

// finishFile gives a written file its size, mode and mtime through its
// descriptor (no path lookups), then closes it.
func finishFile(fd int, e *entry, written int64) error {
	err := func() error {
		if written != e.Size {
			if err := unix.Ftruncate(fd, e.Size); err != nil {
				return err
			}
		}
		if err := unix.Fchmod(fd, unixMode(e.Mode)); err != nil {
			return err
		}
		return futimens(fd, timespecs(e.MTime))
	}()
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// futimens is utimensat(fd, NULL, ts, 0), as the C library's futimens.
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// openFile is one restored file's descriptor while its chunks arrive.
type openFile struct {
	mu      sync.Mutex
	fd      int // valid while isOpen
	isOpen  bool
	users   int   // writes in progress
	left    int   // chunks not yet written
	written int64 // bytes written
}

// fileWriter writes chunks into the restored files from several packs at
// once: one descriptor per file, kept open across its chunks (up to
// maxOpenFiles), with pwrite, and the file's metadata set through it once
// its last chunk is written.
type fileWriter struct {
	t       *tree
	abs     func(*entry) string
	files   []openFile
	open    atomic.Int64
	maxOpen int64
}

func (w *fileWriter) write(i int, data []byte, off int64) error {
	of := &w.files[i]
	e := &w.t.Entries[i]
	of.mu.Lock()
	if !of.isOpen {
		fd, err := unix.Open(w.abs(e), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			of.mu.Unlock()
			return fmt.Errorf("restore %s: %w", w.abs(e), err)
		}
		of.fd, of.isOpen = fd, true
		w.open.Add(1)
	}
	of.users++
	fd := of.fd
	of.mu.Unlock()

	var err error
	for b, o := data, off; len(b) > 0 && err == nil; {
		var n int
		n, err = unix.Pwrite(fd, b, o)
		if err == unix.EINTR {
			err = nil
		}
		if n == 0 && err == nil {
			err = io.ErrShortWrite
		}
		b, o = b[n:], o+int64(n)
	}

	of.mu.Lock()
	defer of.mu.Unlock()
	of.users--
	if err != nil {
		return fmt.Errorf("restore %s: %w", w.abs(e), err)
	}
	of.left--
	of.written += int64(len(data))
	switch {
	case of.left == 0:
		// The last chunk: no other write is in progress.
		of.isOpen = false
		w.open.Add(-1)
		if err := finishFile(fd, e, of.written); err != nil {
			return fmt.Errorf("restore %s: %w", w.abs(e), err)
		}
	case of.users == 0 && w.open.Load() > w.maxOpen:
		of.isOpen = false
		w.open.Add(-1)
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("restore %s: %w", w.abs(e), err)
		}
	}
	return nil
}

// closeAll closes what a failed restore left open.
func (w *fileWriter) closeAll() {
	for i := range w.files {
		of := &w.files[i]
		of.mu.Lock()
		if of.isOpen {
			unix.Close(of.fd)
			of.isOpen = false
		}
		of.mu.Unlock()
	}
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

func (r *Repo) restorePack(ctx context.Context, cd *codec, x *index, pack ID, blobs map[ID][]piece, w *fileWriter, done *atomic.Int64) error {
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
		data, err := cd.openInto(blobEntry{ID: id, location: loc}, body[loc.Offset:end])
		if err != nil {
			bad = append(bad, err.Error()+" (file "+w.t.Entries[pieces[0].file].Path+")")
			continue
		}
		for _, pc := range pieces {
			if err := w.write(pc.file, data, pc.off); err != nil {
				return err
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
