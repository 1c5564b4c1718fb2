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
// snapshot is restored into a staging directory inside it (on the
// volume's own filesystem, even when the volume is a mount point), then
// the current content is moved aside and the restored one in, by renames;
// the old content is removed only once the new one is complete, and any
// failure puts it back. The caller makes sure nothing uses the volume.
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
	x, err := r.loadIndex(ctx)
	if err != nil {
		return err
	}
	t, err := r.loadTree(ctx, x, s)
	if err != nil {
		return err
	}
	err = r.restoreTree(ctx, x, t, target, opts)
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
	if err := os.RemoveAll(aside); err != nil {
		r.cfg.Logf("snapshot: restored in place, but removing the previous content %s: %v", aside, err)
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

// checkTree refuses, before anything is written, a tree that would write
// outside the target or twice to one path: an absolute path, a "." or
// ".." component, an empty one, a path given twice, an entry whose parent
// is not a directory of the tree (`a -> /etc` then `a/x`), a hard link to
// anything but an earlier file.
func checkTree(t *tree) error {
	kind := make(map[string]string, len(t.Entries))
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.Path == "." {
			if e.Type != typeDir {
				return fmt.Errorf("tree entry %q: the root is not a directory", e.Path)
			}
		} else if err := checkPath(e.Path); err != nil {
			return err
		}
		if _, dup := kind[e.Path]; dup {
			return fmt.Errorf("tree entry %q is given twice", e.Path)
		}
		if e.Path != "." {
			if dir, _ := splitPath(e.Path); dir != "." && kind[dir] != typeDir {
				if kind[dir] == "" {
					return fmt.Errorf("tree entry %q comes before its directory %q, or has none", e.Path, dir)
				}
				return fmt.Errorf("tree entry %q is under %q, which is not a directory (type %q): restore follows no link", e.Path, dir, kind[dir])
			}
		}
		switch e.Type {
		case typeHardlink:
			if kind[e.Target] != typeFile {
				return fmt.Errorf("tree entry %q links to %q, which is not an earlier file of the tree", e.Path, e.Target)
			}
			if len(e.Chunks) > 0 {
				return fmt.Errorf("tree entry %q is a link with data", e.Path)
			}
		case typeFile, typeDir, typeSymlink, typeFIFO, typeChar, typeBlock:
		default:
			return fmt.Errorf("tree entry %q has unknown type %q; a newer conveyor wrote it", e.Path, e.Type)
		}
		kind[e.Path] = e.Type
	}
	return nil
}

func (r *Repo) restoreTree(ctx context.Context, x *index, t *tree, target string, opts snapshot.RestoreOptions) error {
	if err := checkTree(t); err != nil {
		return fmt.Errorf("%w: %v; nothing restored", errCorrupt, err)
	}
	root, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", target, err)
	}
	defer unix.Close(root)
	own := newOwners(t, opts.IgnoreOwner)
	var warned sync.Once
	warn := func(f string, a ...any) { warned.Do(func() { r.cfg.Logf(f+" (said once per restore)", a...) }) }
	show := func(e *entry) string { return filepath.Join(target, filepath.FromSlash(e.Path)) }
	// Plan: every blob needed, grouped by pack; each pack ranked by the
	// first file it serves, so that files are completed (and closed) one
	// after another rather than all kept open.
	need := map[ID]map[ID][]piece{} // pack -> blob -> pieces
	rank := map[ID]int{}
	var total int64
	for i := range t.Entries {
		e := &t.Entries[i]
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
	// Everything is created first, in tree order (parents first), each
	// name new (O_EXCL, mkdirat, symlinkat...) in a directory reached
	// without following a symlink; files get their data next, and their
	// metadata through their own descriptor once complete.
	dirs := dirCache{root: root, fd: -1}
	defer dirs.close()
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.Path == "." {
			continue
		}
		pfd, base, err := dirs.parent(e.Path)
		if err != nil {
			return fmt.Errorf("restore %s: %w", show(e), err)
		}
		if err := createEntry(pfd, base, t, e, own, &dirs, warn); err != nil {
			return fmt.Errorf("restore %s: %w", show(e), beneathError(err))
		}
	}
	dirs.close()
	var done atomic.Int64
	if opts.Progress != nil {
		tk := time.NewTicker(time.Second)
		stop := make(chan struct{})
		defer func() { tk.Stop(); close(stop) }()
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					opts.Progress(snapshot.Progress{Bytes: done.Load(), TotalBytes: total})
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
	w := &fileWriter{t: t, root: root, show: show, own: own, warn: warn, files: make([]openFile, len(t.Entries)), maxOpen: int64(r.maxOpen)}
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
	// Directories last, the root included: creating an entry in a
	// directory changes its mtime, and a read-only one could not have
	// been written into.
	for i := len(t.Entries) - 1; i >= 0; i-- {
		e := &t.Entries[i]
		if e.Type != typeDir || (e.Path == "." && opts.InPlace) {
			continue // in place, the root is the volume's: see swapIn
		}
		fd, err := openBeneath(root, e.Path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return fmt.Errorf("restore %s: %w", show(e), beneathError(err))
		}
		err = finishDir(fd, t, e, own, warn)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("restore %s: %w", show(e), err)
		}
	}
	return nil
}

// createEntry creates e as base in the directory pfd.
func createEntry(pfd int, base string, t *tree, e *entry, own owners, dirs *dirCache, warn func(string, ...any)) error {
	switch e.Type {
	case typeDir:
		return unix.Mkdirat(pfd, base, 0o700)
	case typeFile:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		if len(e.Chunks) == 0 {
			return finishFile(fd, t, e, 0, own, warn)
		}
		return unix.Close(fd)
	case typeHardlink:
		// The first name was created earlier, in a directory of the tree
		// (checkTree): reach it the same way.
		odir, obase := splitPath(e.Target)
		ofd := dirs.root
		if odir != "." {
			fd, err := openBeneath(dirs.root, odir, unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			ofd = fd
		}
		return unix.Linkat(ofd, obase, pfd, base, 0)
	case typeSymlink:
		if err := unix.Symlinkat(e.Target, pfd, base); err != nil {
			return err
		}
		if own.restore {
			if err := unix.Fchownat(pfd, base, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
		}
		return unix.UtimesNanoAt(pfd, base, timespecs(e.MTime), unix.AT_SYMLINK_NOFOLLOW)
	case typeFIFO, typeChar, typeBlock:
		mode := uint32(unix.S_IFIFO)
		switch e.Type {
		case typeChar:
			mode = unix.S_IFCHR
		case typeBlock:
			mode = unix.S_IFBLK
		}
		if mode != unix.S_IFIFO && !own.root {
			warn("snapshot: restore %s: device nodes are restored by root only; skipped", e.Path)
			return nil
		}
		if err := unix.Mknodat(pfd, base, mode|0o600, int(e.Rdev)); err != nil {
			return err
		}
		// Opened without blocking or following, to set the rest through
		// the descriptor.
		fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		p := fmt.Sprintf("/proc/self/fd/%d", fd)
		if own.restore {
			if err := unix.Fchownat(fd, "", int(e.UID), int(e.GID), unix.AT_EMPTY_PATH); err != nil {
				return err
			}
		}
		if err := unix.Chmod(p, own.mode(t, e)); err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, timespecs(e.MTime), 0)
	}
	return fmt.Errorf("unknown entry type %q", e.Type)
}

// finishDir gives a directory its owner, mode, xattrs and mtime.
func finishDir(fd int, t *tree, e *entry, own owners, warn func(string, ...any)) error {
	if err := own.fchown(fd, e); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, own.mode(t, e)); err != nil {
		return err
	}
	if err := own.setXattrs(fd, e, warn); err != nil {
		return err
	}
	return futimens(fd, timespecs(e.MTime))
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

// finishFile gives a written file its size, owner, mode, xattrs and
// mtime through its descriptor (no path lookups), then closes it. The
// owner comes before the mode: chown clears set-ID bits.
func finishFile(fd int, t *tree, e *entry, written int64, own owners, warn func(string, ...any)) error {
	err := func() error {
		if written != e.Size {
			if err := unix.Ftruncate(fd, e.Size); err != nil {
				return err
			}
		}
		if err := own.fchown(fd, e); err != nil {
			return err
		}
		if err := unix.Fchmod(fd, own.mode(t, e)); err != nil {
			return err
		}
		if err := own.setXattrs(fd, e, warn); err != nil {
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
	root    int                 // the target directory
	show    func(*entry) string // the path, for messages
	own     owners
	warn    func(string, ...any)
	files   []openFile
	open    atomic.Int64
	maxOpen int64
}

func (w *fileWriter) write(i int, data []byte, off int64) error {
	of := &w.files[i]
	e := &w.t.Entries[i]
	of.mu.Lock()
	if !of.isOpen {
		fd, err := openBeneath(w.root, e.Path, unix.O_WRONLY, 0)
		if err != nil {
			of.mu.Unlock()
			return fmt.Errorf("restore %s: %w", w.show(e), beneathError(err))
		}
		of.fd, of.isOpen = fd, true
		w.open.Add(1)
	}
	of.users++
	fd := of.fd
	of.mu.Unlock()

	var err error
	if e.Sparse {
		err = writeSparse(fd, data, off)
	} else {
		err = pwriteAll(fd, data, off)
	}

	of.mu.Lock()
	defer of.mu.Unlock()
	of.users--
	if err != nil {
		return fmt.Errorf("restore %s: %w", w.show(e), err)
	}
	of.left--
	of.written += int64(len(data))
	switch {
	case of.left == 0:
		// The last chunk: no other write is in progress.
		of.isOpen = false
		w.open.Add(-1)
		if err := finishFile(fd, w.t, e, of.written, w.own, w.warn); err != nil {
			return fmt.Errorf("restore %s: %w", w.show(e), err)
		}
	case of.users == 0 && w.open.Load() > w.maxOpen:
		of.isOpen = false
		w.open.Add(-1)
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("restore %s: %w", w.show(e), err)
		}
	}
	return nil
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
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

// checkPath refuses paths that would leave the target or are not in
// normal form: absolute, empty, or with an empty, "." or ".." component.
func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") {
		return fmt.Errorf("tree entry %q is not a relative path", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("tree entry %q has a %q component: it could leave the target directory", p, c)
		}
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
