package local

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Restore streams the tree, a batch of files at a time, as Create walks
// it a directory at a time, so that what it holds follows a batch and
// the directories on one path, not the whole snapshot:
//
//   - First the tree is checked, whole, before anything is written
//     (checkDirs for a version 3 tree, read a directory at a time;
//     checkTree for a version 1 or 2 one, which is one blob anyway).
//   - Then it is walked again, in the same order (a tree of up to
//     batchFiles files is one batch: planned whole, as before streaming;
//     at a million files a batch holds about 60 MB). Directories, symlinks,
//     special and empty files are created as they come (parents first);
//     files with data and hard links go into the current batch. A full
//     batch is restored on the pack workers (planned in spans, see
//     planSpans) while the walker fills the next one.
//   - When a batch is done, its hard links are created (their file is
//     earlier in the walk: in this batch or a finished one), then the
//     directories whose whole content was walked before it was cut get
//     their owner, mode, xattrs and mtime (deepest first: creating an
//     entry changes a directory's mtime, and a read-only one could not
//     be written into). The root is last. A restore that is not root's
//     keeps a directory whose mode denies its owner search permission
//     for the end (after the last batch, children first): a hard link
//     in a later batch may have to reach a file through it.
const (
	batchFiles  = 262144  // files with data (or links, or directories) per batch
	batchChunks = 1 << 16 // chunks per batch
)

// restoreBatch is what one batch restores.
type restoreBatch struct {
	t      tree    // files with data, with their full paths
	links  []entry // hard links, made once the files are complete
	dirs   []entry // directories to finish after the batch, deepest first
	uses   []blobUse
	packNo map[ID]int32
	packs  []ID
	chunks int
	done   chan error
}

// restorer is one restore's state.
type restorer struct {
	r        *Repo
	ctx      context.Context
	x        *index
	opts     snapshot.RestoreOptions
	target   string
	root     int   // the target directory
	vt       *tree // the snapshot's version (no entries), for modes
	own      owners
	warn     func(string, ...any)
	legacy   bool // a version 1 or 2 tree, sorted by path but not depth first
	dirs     dirCache
	open     []entry // version 3: the directories on the walk's path, unfinished
	allDirs  []entry // version 1 or 2: every directory, finished at the end
	late     []entry // directories closed to their owner, finished at the end (not root)
	rootE    entry
	haveRoot bool
	cur      *restoreBatch
	running  *restoreBatch
	done     atomic.Int64
	errMu    sync.Mutex
	problems map[ID]*packProblem
	codecs   sync.Pool
}

func (rs *restorer) show(e *entry) string {
	return filepath.Join(rs.target, filepath.FromSlash(e.Path))
}

func (rs *restorer) newBatch() *restoreBatch {
	return &restoreBatch{t: tree{Version: rs.vt.Version}, packNo: map[ID]int32{}}
}

// restoreTree restores snapshot s into target (which exists, empty). It
// returns the snapshot's root entry (Version set, no other entries) for
// an in-place restore to give the volume.
func (r *Repo) restoreTree(ctx context.Context, x *index, s snapshot.Snapshot, target string, opts snapshot.RestoreOptions) (*tree, error) {
	_, t, err := r.loadRoot(ctx, x, s)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	rs := &restorer{r: r, ctx: ctx, x: x, opts: opts, target: target, legacy: t.Version < 3,
		vt: &tree{Version: t.Version}, problems: map[ID]*packProblem{}}
	rs.codecs.New = func() any { return r.newCodec() }
	var tc *treeCache
	var total int64
	if rs.legacy {
		if err := checkTree(t); err != nil {
			cancel()
			return nil, fmt.Errorf("%w: %v; nothing restored", errCorrupt, err)
		}
		for i := range t.Entries {
			if err := checkIndexed(x, t.Entries[i].Path, &t.Entries[i]); err != nil {
				cancel()
				return nil, err
			}
			total += t.Entries[i].Size
		}
	} else {
		tc = newTreeCache(r, x)
		if total, err = r.checkDirs(ctx, x, tc, s); err != nil {
			cancel()
			return nil, err
		}
	}
	root, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open %s: %w", target, err)
	}
	rs.root = root
	rs.dirs = dirCache{root: root, fd: -1}
	defer func() {
		cancel()
		if rs.running != nil {
			<-rs.running.done // its writers use root
		}
		rs.dirs.close()
		unix.Close(root)
	}()
	rs.own = newOwners(rs.vt, opts.IgnoreOwner)
	// Each kind of warning (a format) is said once per restore.
	var warnMu sync.Mutex
	warned := map[string]bool{}
	rs.warn = func(f string, a ...any) {
		warnMu.Lock()
		defer warnMu.Unlock()
		if !warned[f] {
			warned[f] = true
			r.cfg.Logf(f+" (said once per restore)", a...)
		}
	}
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
					opts.Progress(snapshot.Progress{Bytes: rs.done.Load(), TotalBytes: total})
				}
			}
		}()
	}
	rs.cur = rs.newBatch()
	if rs.legacy {
		for i := range t.Entries {
			if err = rs.add(t.Entries[i].Path, &t.Entries[i]); err != nil {
				break
			}
		}
	} else {
		err = r.eachEntry(ctx, x, tc, s, nil, func(ID) {}, rs.add)
	}
	if err != nil {
		return nil, err
	}
	rs.closeDirs(0)
	if err := rs.flush(); err != nil {
		return nil, err
	}
	if err := rs.wait(); err != nil {
		return nil, err
	}
	if len(rs.problems) > 0 {
		return nil, fmt.Errorf("%w: %d object(s) could not be restored:\n%w", errCorrupt, len(rs.problems), r.problemsError(rs.problems))
	}
	for i := len(rs.allDirs) - 1; i >= 0; i-- {
		if err := rs.finishDir(&rs.allDirs[i]); err != nil {
			return nil, err
		}
	}
	for i := range rs.late {
		if err := rs.finishDir(&rs.late[i]); err != nil {
			return nil, err
		}
	}
	if rs.haveRoot && !opts.InPlace { // in place, the root is the volume's: see swapIn
		if err := rs.finishDir(&rs.rootE); err != nil {
			return nil, err
		}
	}
	out := &tree{Version: t.Version}
	if rs.haveRoot {
		out.Entries = []entry{rs.rootE}
	}
	return out, nil
}

// checkIndexed refuses a file whose chunks are not all in the index.
func checkIndexed(x *index, p string, e *entry) error {
	for _, c := range e.Chunks {
		if !x.has(c) {
			return fmt.Errorf("%w: blob %s of %s is in no index; nothing restored ('conveyor snapshot repair' rebuilds the index from the packs)", errCorrupt, c, p)
		}
	}
	return nil
}

// checkDirs checks a version 3 tree before a restore writes anything,
// reading it a directory at a time: every name is one path component and
// given once in its directory (treeCache.dir), every type is known, every
// chunk indexed, every hard link names a file of the tree that comes
// before it in the walk. It returns the files' total size. The
// structure does the rest: an entry's directory is the directory entry
// whose blob lists it, so no path goes through a symlink.
func (r *Repo) checkDirs(ctx context.Context, x *index, tc *treeCache, s snapshot.Snapshot) (int64, error) {
	type link struct {
		path, target string
		pos          []int32
	}
	var (
		links   []link
		total   int64
		rootSub ID
		pos     []int32 // the entry's index in each directory on its path
		depth   = -1    // the previous entry's
	)
	err := r.eachEntry(ctx, x, tc, s, nil, func(ID) {}, func(p string, e *entry) error {
		if p == "." {
			rootSub = *e.Sub
			return nil
		}
		k := strings.Count(p, "/")
		if k > depth {
			pos = append(pos[:k], -1) // the first entry of a directory
		} else {
			pos = pos[:k+1]
		}
		pos[k]++
		depth = k
		switch e.Type {
		case typeFile:
			total += e.Size
			return checkIndexed(x, p, e)
		case typeHardlink:
			if len(e.Chunks) > 0 {
				return fmt.Errorf("%w: tree entry %q is a link with data; nothing restored", errCorrupt, p)
			}
			links = append(links, link{p, e.Target, slices.Clone(pos)})
		case typeDir, typeSymlink, typeFIFO, typeChar, typeBlock:
		default:
			return fmt.Errorf("%w: tree entry %q has unknown type %q; a newer conveyor wrote it; nothing restored", errCorrupt, p, e.Type)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	// Each link's target, found by its path from the root: its position
	// must come before the link's (positions compare as the walk goes).
	memo := map[ID][]entry{}
	resolve := func(target string) ([]int32, bool, error) {
		if checkPath(target) != nil {
			return nil, false, nil
		}
		comps := strings.Split(target, "/")
		sub, tpos := rootSub, make([]int32, 0, len(comps))
		for i, c := range comps {
			kids, ok := memo[sub]
			if !ok {
				var err error
				if kids, err = tc.dir(ctx, "", &sub); err != nil {
					return nil, false, err
				}
				if len(memo) >= 64 {
					clear(memo)
				}
				memo[sub] = kids
			}
			j := slices.IndexFunc(kids, func(e entry) bool { return e.Path == c })
			if j < 0 {
				return nil, false, nil
			}
			tpos = append(tpos, int32(j))
			e := &kids[j]
			if i == len(comps)-1 {
				return tpos, e.Type == typeFile, nil
			}
			if e.Type != typeDir || e.Sub == nil {
				return nil, false, nil
			}
			sub = *e.Sub
		}
		return nil, false, nil
	}
	for _, l := range links {
		tpos, isFile, err := resolve(l.target)
		if err != nil {
			return 0, err
		}
		if !isFile || slices.Compare(tpos, l.pos) >= 0 {
			return 0, fmt.Errorf("%w: tree entry %q links to %q, which is not an earlier file of the tree; nothing restored", errCorrupt, l.path, l.target)
		}
	}
	return total, nil
}

// add restores or plans one entry of the walk (p its path).
func (rs *restorer) add(p string, e *entry) error {
	ce := *e
	ce.Path = p
	if p == "." {
		rs.rootE, rs.haveRoot = ce, true
		return nil
	}
	if !rs.legacy {
		rs.closeDirs(strings.Count(p, "/"))
	}
	pfd, base, err := rs.dirs.parent(p)
	if err != nil {
		return fmt.Errorf("restore %s: %w", rs.show(&ce), err)
	}
	b := rs.cur
	switch {
	case ce.Type == typeHardlink:
		b.links = append(b.links, ce)
	case ce.Type == typeFile && len(ce.Chunks) > 0:
		if err := rs.plan(b, &ce); err != nil {
			return err
		}
	default:
		if err := createEntry(pfd, base, rs.vt, &ce, rs.own, &rs.dirs, rs.warn); err != nil {
			return fmt.Errorf("restore %s: %w", rs.show(&ce), beneathError(err))
		}
		if ce.Type == typeDir {
			if rs.legacy {
				rs.allDirs = append(rs.allDirs, ce)
			} else {
				rs.open = append(rs.open, ce)
			}
		}
	}
	limit := batchFiles
	if rs.r.restoreBatch > 0 {
		limit = rs.r.restoreBatch
	}
	if len(b.t.Entries) >= limit || b.chunks >= batchChunks || len(b.links)+len(b.dirs) >= limit {
		return rs.flush()
	}
	return nil
}

// closeDirs moves the directories of the walk's path at depth k or
// deeper (the next entry is at depth k: their content is all walked) to
// the current batch's, deepest first.
func (rs *restorer) closeDirs(k int) {
	for n := len(rs.open); n > 0 && strings.Count(rs.open[n-1].Path, "/") >= k; n-- {
		rs.cur.dirs = append(rs.cur.dirs, rs.open[n-1])
		rs.open = rs.open[:n-1]
	}
}

// plan adds a file with data to batch b: every place its blobs go.
func (rs *restorer) plan(b *restoreBatch, e *entry) error {
	i := int32(len(b.t.Entries))
	var off int64
	for _, c := range e.Chunks {
		loc, ok := rs.x.lookup(c)
		if !ok {
			return fmt.Errorf("%w: blob %s of %s is in no index", errCorrupt, c, e.Path)
		}
		if uint64(loc.Offset)+uint64(loc.Length) > math.MaxUint32 {
			return fmt.Errorf("%w: blob %s of %s lies past 4 GiB in its pack, as no pack does", errCorrupt, c, e.Path)
		}
		n, ok := b.packNo[loc.Pack]
		if !ok {
			n = int32(len(b.packs))
			b.packNo[loc.Pack] = n
			b.packs = append(b.packs, loc.Pack)
		}
		b.uses = append(b.uses, blobUse{id: c, pack: n, offset: loc.Offset, end: loc.Offset + loc.Length, file: i, off: off})
		off += int64(loc.Raw)
	}
	b.chunks += len(e.Chunks)
	b.t.Entries = append(b.t.Entries, *e)
	return nil
}

// flush waits for the batch running, then starts the current one.
func (rs *restorer) flush() error {
	if err := rs.wait(); err != nil {
		return err
	}
	b := rs.cur
	rs.cur = rs.newBatch()
	b.done = make(chan error, 1)
	rs.running = b
	go func() { b.done <- rs.run(b) }()
	return nil
}

// wait waits for the batch running, then makes its hard links and
// finishes its directories.
func (rs *restorer) wait() error {
	b := rs.running
	if b == nil {
		return nil
	}
	rs.running = nil
	if err := <-b.done; err != nil {
		return err
	}
	for i := range b.links {
		e := &b.links[i]
		pfd, base, err := rs.dirs.parent(e.Path)
		if err == nil {
			err = createEntry(pfd, base, rs.vt, e, rs.own, &rs.dirs, rs.warn)
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", rs.show(e), beneathError(err))
		}
	}
	for i := range b.dirs {
		if e := &b.dirs[i]; !rs.own.root && e.Mode&0o100 == 0 {
			// Its mode would deny its owner search permission, and a
			// link in a later batch may have to reach a file in it:
			// finished last (children come before their parents here).
			rs.late = append(rs.late, *e)
			continue
		}
		if err := rs.finishDir(&b.dirs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (rs *restorer) finishDir(e *entry) error {
	p := e.Path
	fd, err := openBeneath(rs.root, p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("restore %s: %w", rs.show(e), beneathError(err))
	}
	err = finishDir(fd, rs.vt, e, rs.own, rs.warn)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("restore %s: %w", rs.show(e), err)
	}
	return nil
}

// run restores batch b's files from their packs, a span per task. A
// missing pack or a damaged blob is recorded and the restore goes on, so
// that every damaged object is named.
func (rs *restorer) run(b *restoreBatch) error {
	if len(b.uses) == 0 {
		return nil
	}
	w := &fileWriter{t: &b.t, root: rs.root, show: rs.show, own: rs.own, warn: rs.warn,
		files: make([]openFile, len(b.t.Entries)), maxOpen: int64(rs.r.maxOpen), direct: !rs.opts.Buffered,
		pwriteDirect: rs.r.pwriteDirect}
	if w.maxOpen <= 0 {
		w.maxOpen = maxOpenFiles
	}
	for i := range b.t.Entries {
		w.files[i].left = int32(len(b.t.Entries[i].Chunks))
	}
	defer func() {
		rs.r.directBytes.Add(w.directBytes.Load())
		rs.r.directCopied.Add(w.copiedBytes.Load())
		rs.r.refusedDirect.Add(w.refusedDirect.Load())
	}()
	defer w.closeAll()
	spans := interleave(planSpans(b.uses, b.packs), rs.r.cfg.Uploads)
	g, gctx := errgroup.WithContext(rs.ctx)
	g.SetLimit(rs.r.cfg.Uploads)
	for i := range spans {
		sp := &spans[i]
		g.Go(func() error {
			cd := rs.codecs.Get().(*codec)
			defer rs.codecs.Put(cd)
			missing, bad, err := rs.r.restoreSpan(gctx, cd, rs.x, sp, w, &rs.done)
			if missing || len(bad) > 0 {
				rs.errMu.Lock()
				pp := rs.problems[sp.pack]
				if pp == nil {
					pp = &packProblem{}
					rs.problems[sp.pack] = pp
				}
				pp.missing = pp.missing || missing
				pp.blobs += sp.blobs()
				pp.bad = append(pp.bad, bad...)
				rs.errMu.Unlock()
			}
			return err
		})
	}
	return g.Wait()
}
