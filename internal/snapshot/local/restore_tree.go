package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// checkTree refuses, before anything is written, a tree that would write
// outside the target or twice to one path: an absolute path, a "." or
// ".." component, an empty one, a path given twice, an entry whose parent
// is not a directory of the tree (`a -> /etc` then `a/x`), a hard link to
// anything but an earlier file.
func checkTree(t *tree) error {
	kind := make(map[string]byte, len(t.Entries)) // path -> type (its one letter)
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
			if dir, _ := splitPath(e.Path); dir != "." && kind[dir] != typeDir[0] {
				if kind[dir] == 0 {
					return fmt.Errorf("tree entry %q comes before its directory %q, or has none", e.Path, dir)
				}
				return fmt.Errorf("tree entry %q is under %q, which is not a directory (type %q): restore follows no link", e.Path, dir, string(kind[dir]))
			}
		}
		switch e.Type {
		case typeHardlink:
			if kind[e.Target] != typeFile[0] {
				return fmt.Errorf("tree entry %q links to %q, which is not an earlier file of the tree", e.Path, e.Target)
			}
			if len(e.Chunks) > 0 {
				return fmt.Errorf("tree entry %q is a link with data", e.Path)
			}
		case typeFile, typeDir, typeSymlink, typeFIFO, typeChar, typeBlock:
		default:
			return fmt.Errorf("tree entry %q has unknown type %q; a newer conveyor wrote it", e.Path, e.Type)
		}
		kind[e.Path] = e.Type[0]
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
	// Each kind of warning (a format) is said once per restore.
	var warnMu sync.Mutex
	warned := map[string]bool{}
	warn := func(f string, a ...any) {
		warnMu.Lock()
		defer warnMu.Unlock()
		if !warned[f] {
			warned[f] = true
			r.cfg.Logf(f+" (said once per restore)", a...)
		}
	}
	show := func(e *entry) string { return filepath.Join(target, filepath.FromSlash(e.Path)) }
	// Plan: every place a blob goes, then cut into spans (see
	// planSpans).
	var uses []blobUse
	packNo := map[ID]int32{}
	var packs []ID
	var total int64
	for i := range t.Entries {
		e := &t.Entries[i]
		var off int64
		for _, c := range e.Chunks {
			loc, ok := x.lookup(c)
			if !ok {
				return fmt.Errorf("%w: blob %s of %s is in no index", errCorrupt, c, e.Path)
			}
			if uint64(loc.Offset)+uint64(loc.Length) > math.MaxUint32 {
				return fmt.Errorf("%w: blob %s of %s lies past 4 GiB in its pack, as no pack does", errCorrupt, c, e.Path)
			}
			n, ok := packNo[loc.Pack]
			if !ok {
				n = int32(len(packs))
				packNo[loc.Pack] = n
				packs = append(packs, loc.Pack)
			}
			uses = append(uses, blobUse{id: c, pack: n, offset: loc.Offset, end: loc.Offset + loc.Length, file: int32(i), off: off})
			off += int64(loc.Raw)
		}
		total += e.Size
	}
	// Directories, symlinks, special and empty files are created first,
	// in tree order (parents first); files with data are created by their
	// first write, hard links once those are complete. Each name is new
	// (mkdirat, O_EXCL, symlinkat...), in a directory reached without
	// following a symlink, and a file gets its metadata through its own
	// descriptor once complete.
	w := &fileWriter{t: t, root: root, show: show, own: own, warn: warn, files: make([]openFile, len(t.Entries)), maxOpen: int64(r.maxOpen)}
	if w.maxOpen <= 0 {
		w.maxOpen = maxOpenFiles
	}
	for i := range t.Entries {
		w.files[i].left = int32(len(t.Entries[i].Chunks))
	}
	defer w.closeAll()
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
		if e.Type == typeHardlink || (e.Type == typeFile && len(e.Chunks) > 0) {
			continue // files with data come with it, links after them
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
	spans := planSpans(uses, packs)
	var errMu sync.Mutex
	problems := map[ID]*packProblem{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Uploads)
	var codecs sync.Pool
	codecs.New = func() any { return r.newCodec() }
	for i := range spans {
		sp := &spans[i]
		g.Go(func() error {
			cd := codecs.Get().(*codec)
			defer codecs.Put(cd)
			missing, bad, err := r.restoreSpan(gctx, cd, x, sp, w, &done)
			if missing || len(bad) > 0 {
				// Go on: report every damaged object, not the first one.
				errMu.Lock()
				pp := problems[sp.pack]
				if pp == nil {
					pp = &packProblem{}
					problems[sp.pack] = pp
				}
				pp.missing = pp.missing || missing
				pp.blobs += sp.blobs()
				pp.bad = append(pp.bad, bad...)
				errMu.Unlock()
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %d object(s) could not be restored:\n%w", errCorrupt, len(problems), r.problemsError(problems))
	}
	// Hard links once their file is complete: they share its inode.
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.Type != typeHardlink {
			continue
		}
		pfd, base, err := dirs.parent(e.Path)
		if err == nil {
			err = createEntry(pfd, base, t, e, own, &dirs, warn)
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", show(e), beneathError(err))
		}
	}
	dirs.close()
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

// createEntry creates e as base in the directory pfd; a file, empty (one
// with data is created by its first write).
func createEntry(pfd int, base string, t *tree, e *entry, own owners, dirs *dirCache, warn func(string, ...any)) error {
	err := createOther(pfd, base, t, e, own, dirs, warn)
	if err != errIsFile {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	return finishFile(fd, t, e, 0, own, warn)
}

var errIsFile = errors.New("a regular file")

// createOther creates what is not a regular file (errIsFile for one).
func createOther(pfd int, base string, t *tree, e *entry, own owners, dirs *dirCache, warn func(string, ...any)) error {
	switch e.Type {
	case typeDir:
		return unix.Mkdirat(pfd, base, 0o700)
	case typeFile:
		return errIsFile
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
		if _, err := own.chown(pfd, base, e, warn); err != nil {
			return err
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
		owned, err := own.chown(pfd, base, e, warn)
		if err != nil {
			return err
		}
		if err := unix.Chmod(p, own.modeAs(t, e, owned)); err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, timespecs(e.MTime), 0)
	}
	return fmt.Errorf("unknown entry type %q", e.Type)
}

// finishDir gives a directory its owner, mode, xattrs and mtime.
func finishDir(fd int, t *tree, e *entry, own owners, warn func(string, ...any)) error {
	owned, err := own.chown(fd, "", e, warn)
	if err != nil {
		return err
	}
	if err := unix.Fchmod(fd, own.modeAs(t, e, owned)); err != nil {
		return err
	}
	if err := own.setXattrs(fd, e, warn); err != nil {
		return err
	}
	return futimens(fd, timespecs(e.MTime))
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
	for rest := p; ; {
		c, more, found := strings.Cut(rest, "/")
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("tree entry %q has a %q component: it could leave the target directory", p, c)
		}
		if !found {
			return nil
		}
		rest = more
	}
}
