package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Create walks the source a directory at a time, as restic does, so that
// what it holds follows the widest directories, not the whole volume:
//
//   - One walker goroutine lists a directory (lexical order, as
//     filepath.WalkDir), reads the parent snapshot's blob of the same
//     directory, keeps the chunks of every unchanged file, hands each
//     other file to the readers and descends into each subdirectory as it
//     meets it.
//   - A directory is finished when its listing is done and its files and
//     subdirectories are: its blob is then compared with the parent's
//     (same entries: the parent's blob is used, nothing is encoded) or
//     stored, its entry in its own parent gets the blob's ID, and the
//     parent is one step nearer its own end. Whoever finishes the last
//     piece (the walker or a reader) finishes the directory.
//
// So a directory's entries are held from its listing to its end: those of
// the directories on the walker's path, and of the few whose files are
// still being read. Tree blobs go to packs of their own (as restic's do),
// written in the order directories end, so the next snapshot reads the
// parent's blobs from a few ranges of a few packs (treeCache).

// dirState is a directory of the source being snapshotted.
type dirState struct {
	parent *dirState
	slot   int    // this directory's index in parent.kids
	rel    string // slash-separated path below the source, "." for the source
	kids   []entry
	// The parent snapshot's blob of this directory: its ID and entries
	// (by name, in order); nil when the directory is new or that blob
	// could not be read.
	oldSub *ID
	old    []entry
	// left counts what is unfinished: one for the listing, one for each
	// file being read and each subdirectory.
	left atomic.Int64

	// Preparing: listing the directory, describing its entries and
	// reading the parent's blob of it, by a prefetcher ahead of the
	// walker or by the walker itself, whichever claims it first.
	claimed    atomic.Bool
	done       chan struct{} // closed once prepared
	prefetched bool          // by a prefetcher (which holds a slot until the walker takes it)
	err        error
	subs       []*dirState // the subdirectories, by index in kids
	// links: the (device, inode) of each file with several links, by
	// index in kids, told apart from the others by the walker.
	links map[int][2]uint64
}

func newDirState(parent *dirState, slot int, rel string, oldSub *ID) *dirState {
	d := &dirState{parent: parent, slot: slot, rel: rel, oldSub: oldSub, done: make(chan struct{})}
	d.left.Store(1)
	return d
}

// child is the path of name in d.
func (d *dirState) child(name string) string {
	if d.rel == "." {
		return name
	}
	return d.rel + "/" + name
}

// oldEntry is the parent snapshot's entry named name in d, if any.
func (d *dirState) oldEntry(name string) *entry {
	i, ok := slices.BinarySearchFunc(d.old, name, func(e entry, n string) int { return strings.Compare(e.Path, n) })
	if !ok {
		return nil
	}
	return &d.old[i]
}

// fileJob is a file of a directory to read.
type fileJob struct {
	dir *dirState
	i   int    // index in dir.kids
	rel string // path below the source
	old *entry // the parent snapshot's entry of this path, if a file
}

// prepare lists d, describes its entries (hard links are told apart by
// the walker, in walk order), reads the parent snapshot's entries of it
// and makes the state of each subdirectory. It runs on a prefetcher or on
// the walker, once (whoever claimed d), which then closes d.done.
func (c *creator) prepare(ctx context.Context, d *dirState) {
	dir := filepath.Join(c.src, filepath.FromSlash(d.rel))
	// The directory is reached from the source's descriptor without
	// following a symlink, then listed and its entries described through
	// its own descriptor: a directory swapped for a symlink (to /etc,
	// say) since its parent was listed is not walked into. Extended
	// attributes alone are read by path (through /proc/self/fd/N/name
	// they doubled the system time of a snapshot of an unchanged
	// volume).
	var des []fs.DirEntry
	fd, err := openBeneath(c.srcFD, d.rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Removed while we walk: an empty directory keeps the tree sound.
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EXDEV):
		c.r.cfg.Logf("snapshot: %s is no longer a directory below the source (a symlink on its path?); recorded empty", dir)
	case err != nil:
		d.err = fmt.Errorf("walk %s: %w", dir, err)
		return
	default:
		f := os.NewFile(uintptr(fd), dir)
		defer f.Close()
		if des, err = f.ReadDir(-1); err != nil {
			d.err = fmt.Errorf("walk %s: %w", dir, err)
			return
		}
		slices.SortFunc(des, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	}
	if d.oldSub != nil && c.par != nil {
		if d.old, err = c.par.dir(ctx, d.rel, d.oldSub); err != nil {
			if ctx.Err() != nil {
				d.err = ctx.Err()
				return
			}
			// A damaged parent only costs reading its files again.
			c.r.cfg.Logf("snapshot: previous snapshot's tree of %s unreadable, reading its files: %v", d.rel, err)
			d.old, d.oldSub = nil, nil
		}
	}
	d.kids = make([]entry, 0, len(des))
	for _, de := range des {
		name := de.Name()
		if d.rel == "." && de.IsDir() && (strings.HasPrefix(name, stagingPrefix) || strings.HasPrefix(name, asidePrefix)) {
			continue // what an interrupted in-place restore left
		}
		e, link, ok, err := c.statEntry(fd, name, filepath.Join(dir, name))
		if err != nil {
			d.err = err
			return
		}
		if ok {
			e.Path = name
			if link != ([2]uint64{}) {
				if d.links == nil {
					d.links = map[int][2]uint64{}
				}
				d.links[len(d.kids)] = link
			}
			d.kids = append(d.kids, e)
		}
	}
	for i := range d.kids {
		e := &d.kids[i]
		if e.Type != typeDir {
			continue
		}
		var oldSub *ID
		if old := d.oldEntry(e.Path); old != nil && old.Type == typeDir {
			if old.Sub != nil {
				oldSub = old.Sub
			} else if c.par != nil && c.par.legacy() {
				oldSub = &ID{} // a version 1 or 2 parent: found by path
			}
		}
		if d.subs == nil {
			d.subs = make([]*dirState, len(d.kids))
		}
		d.subs[i] = newDirState(d, i, d.child(e.Path), oldSub)
		d.left.Add(1)
	}
}

// walkDir takes d prepared (waiting for a prefetcher, or preparing it
// itself), sends every file to read on work, walks its subdirectories,
// and drops the listing's share of d.left.
func (c *creator) walkDir(ctx context.Context, d *dirState, work chan<- fileJob, cd *codec, pf *prefetcher) error {
	if d.claimed.CompareAndSwap(false, true) {
		c.prepare(ctx, d)
		close(d.done)
		pf.push(d.subs)
	} else {
		select {
		case <-d.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if d.prefetched {
			pf.taken()
		}
	}
	if d.err != nil {
		return d.err
	}
	for i := range d.kids {
		e := &d.kids[i]
		rel := d.child(e.Path)
		if link, ok := d.links[i]; ok {
			// Hard links in walk order: the first name met is the file.
			if first, ok := c.links[link]; ok {
				e.Type, e.Target, e.Size, e.Xattrs, e.Sparse = typeHardlink, first, 0, nil, false
			} else {
				c.links[link] = rel
			}
		}
		switch e.Type {
		case typeFile:
			old := d.oldEntry(e.Path)
			if old != nil && old.Type != typeFile {
				old = nil
			}
			if old != nil && old.Size == e.Size && old.MTime == e.MTime && old.Inode == e.Inode && c.allIndexed(old.Chunks) {
				e.Chunks = old.Chunks
				c.files.Add(1)
				c.bytes.Add(e.Size)
				continue
			}
			d.left.Add(1)
			select {
			case work <- fileJob{dir: d, i: i, rel: rel, old: old}:
			case <-ctx.Done():
				return ctx.Err()
			}
		case typeDir:
			if err := c.walkDir(ctx, d.subs[i], work, cd, pf); err != nil {
				return err
			}
			d.subs[i] = nil
		}
	}
	d.subs = nil
	return c.finishDir(d, cd)
}

// prefetcher prepares directories ahead of the walker, on Workers
// goroutines: the most recently found first (the walker goes depth
// first), at most limit prepared and not yet taken by the walker, which
// bounds the memory ahead. The walker never waits for a slot: a directory
// no prefetcher has claimed, it prepares itself.
type prefetcher struct {
	c      *creator
	mu     sync.Mutex
	cond   *sync.Cond
	stack  []*dirState
	ahead  int // claimed by a prefetcher, not yet taken by the walker
	limit  int
	closed bool
	wg     sync.WaitGroup
}

func (c *creator) startPrefetch(ctx context.Context, workers, limit int) *prefetcher {
	pf := &prefetcher{c: c, limit: limit}
	pf.cond = sync.NewCond(&pf.mu)
	for i := 0; i < workers; i++ {
		pf.wg.Add(1)
		go pf.run(ctx)
	}
	return pf
}

func (pf *prefetcher) run(ctx context.Context) {
	defer pf.wg.Done()
	for {
		pf.mu.Lock()
		for !pf.closed && (len(pf.stack) == 0 || pf.ahead >= pf.limit) {
			pf.cond.Wait()
		}
		if pf.closed {
			pf.mu.Unlock()
			return
		}
		d := pf.stack[len(pf.stack)-1]
		pf.stack[len(pf.stack)-1] = nil
		pf.stack = pf.stack[:len(pf.stack)-1]
		if !d.claimed.CompareAndSwap(false, true) {
			pf.mu.Unlock()
			continue // the walker came first
		}
		pf.ahead++
		pf.mu.Unlock()
		pf.c.prepare(ctx, d)
		if ctx.Err() == nil && d.err == nil {
			pf.push(d.subs) // before done: then d is the walker's
		}
		d.prefetched = true
		close(d.done)
	}
}

// push offers subdirectories (some nil) to the prefetchers, the first to
// be taken first.
func (pf *prefetcher) push(subs []*dirState) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	n := 0
	for i := len(subs) - 1; i >= 0; i-- {
		if d := subs[i]; d != nil && !d.claimed.Load() {
			pf.stack = append(pf.stack, d)
			n++
		}
	}
	if n > 0 {
		pf.cond.Broadcast()
	}
}

// taken: the walker took a prefetched directory, its slot is free.
func (pf *prefetcher) taken() {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	pf.ahead--
	pf.cond.Signal()
}

// stop ends the prefetchers and waits for them.
func (pf *prefetcher) stop() {
	pf.mu.Lock()
	pf.closed = true
	pf.stack = nil
	pf.cond.Broadcast()
	pf.mu.Unlock()
	pf.wg.Wait()
}

// finishDir drops one share of d.left; the last one stores d's blob (or
// finds it the parent's), hands its ID to d's entry in its parent, and
// finishes a share of the parent in turn.
func (c *creator) finishDir(d *dirState, cd *codec) error {
	for d != nil {
		if d.left.Add(-1) != 0 {
			return nil
		}
		id, err := c.dirBlob(d, cd)
		if err != nil {
			return err
		}
		if d.parent == nil {
			c.root.Sub = &id
			return nil
		}
		d.parent.kids[d.slot].Sub = &id
		d = d.parent
	}
	return nil
}

// dirBlob is the ID of the blob of d's entries, all known: the parent
// snapshot's when they are the same, field by field and subtree by
// subtree, and it is stored (the directory is then neither encoded nor
// hashed again; were it encoded, it would hash to that ID all the same);
// otherwise a new one, stored now.
func (c *creator) dirBlob(d *dirState, cd *codec) (ID, error) {
	var files, dirs, size int64
	for i := range d.kids {
		switch d.kids[i].Type {
		case typeFile:
			files++
			size += d.kids[i].Size
		case typeDir:
			dirs++
		}
	}
	c.stFiles.Add(files)
	c.stDirs.Add(dirs)
	c.stBytes.Add(size)
	same := d.oldSub != nil && len(d.old) == len(d.kids) && !c.par.legacy()
	if same {
		same = c.x.has(*d.oldSub)
	}
	for i := 0; same && i < len(d.kids); i++ {
		same = d.kids[i].Path == d.old[i].Path && sameEntry(&d.kids[i], &d.old[i])
	}
	c.treeEvent(d.rel, same)
	if same {
		return *d.oldSub, nil
	}
	return c.putTree(cd, tree{Version: treeVersion, Entries: d.kids})
}

func (c *creator) treeEvent(rel string, reused bool) {
	if c.r.onTree == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.r.onTree(rel, reused)
}

// statEntry describes the entry name of the directory dfd (its path p,
// for xattrs and messages) with its metadata (tree version 2: owners,
// xattrs, holes, FIFOs and devices) and, for a file of several links, its
// (device, inode); ok is false for what is not kept (a socket, or a file
// removed since it was listed). It is read through dfd, following no
// symlink, so a directory swapped for one since its listing describes
// nothing outside the source; the extended attributes are read by path.
// Files are not read here.
func (c *creator) statEntry(dfd int, name, p string) (e entry, link [2]uint64, ok bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return entry{}, link, false, nil // removed while we walk
	}
	if err != nil {
		return entry{}, link, false, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	// The mode as Go's os package makes it from the same stat.
	mode := fs.FileMode(st.Mode & 0o777)
	if st.Mode&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if st.Mode&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if st.Mode&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	e = entry{Mode: uint32(mode), MTime: st.Mtim.Nano(), Inode: st.Ino, UID: st.Uid, GID: st.Gid}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type, e.Size = typeFile, st.Size
		if st.Nlink > 1 {
			link = [2]uint64{uint64(st.Dev), st.Ino} // the walker tells the first name from the others
		}
		if st.Blocks*512 < st.Size {
			e.Sparse = hasHolesAt(dfd, name, e.Size)
		}
	case unix.S_IFDIR:
		e.Type = typeDir
	case unix.S_IFLNK:
		e.Type = typeSymlink
		if e.Target, err = readlinkAt(dfd, name); err != nil {
			return entry{}, link, false, &fs.PathError{Op: "readlink", Path: p, Err: err}
		}
	case unix.S_IFIFO:
		e.Type = typeFIFO
	case unix.S_IFBLK:
		e.Type, e.Rdev = typeBlock, uint64(st.Rdev)
	case unix.S_IFCHR:
		e.Type, e.Rdev = typeChar, uint64(st.Rdev)
	default:
		c.r.cfg.Logf("snapshot: skipping %s: a socket, or a file of an unknown kind", p)
		return entry{}, link, false, nil
	}
	if e.Type != typeSymlink && e.Type != typeHardlink {
		if e.Xattrs, err = readXattrs(dfd, name, p); err != nil {
			return entry{}, link, false, err
		}
	}
	return e, link, true, nil
}

// readlinkAt reads the target of the symlink name in the directory dfd.
func readlinkAt(dfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// scanTotal adds the size of every regular file below the source to
// c.total, for progress reports (the walk itself is only a little ahead
// of the readers). Errors only stop the count.
func (c *creator) scanTotal(ctx context.Context) {
	filepath.WalkDir(c.src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				c.total.Add(info.Size())
			}
		}
		return nil
	})
}

// parentTree reads the parent snapshot's directories.
type parentTree interface {
	// dir returns the entries of the directory rel, whose blob is sub.
	dir(ctx context.Context, rel string, sub *ID) ([]entry, error)
	// legacy: a version 1 or 2 tree, read whole (its directories have
	// no blob of their own to reuse).
	legacy() bool
}

// legacyTree is a version 1 or 2 parent, its entries grouped by directory.
type legacyTree map[string][]entry

func (lt legacyTree) legacy() bool { return true }

func (lt legacyTree) dir(_ context.Context, rel string, _ *ID) ([]entry, error) { return lt[rel], nil }

func newLegacyTree(t *tree) legacyTree {
	lt := legacyTree{}
	for _, e := range t.Entries {
		if e.Path == "." {
			continue
		}
		d, name := path.Split(e.Path)
		d = strings.TrimSuffix(d, "/")
		if d == "" {
			d = "."
		}
		e.Path = name
		lt[d] = append(lt[d], e)
	}
	for _, es := range lt {
		slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.Path, b.Path) })
	}
	return lt
}

// treeCache reads directory blobs of a version 3 tree one at a time, for
// a walk in the order Create writes them (each directory near its
// descendants): a miss reads the pack range around the blob (the
// neighbouring blobs come next), and the last few ranges are kept.
type treeCache struct {
	r      *Repo
	x      *index
	codecs sync.Pool // *codec
	mu     sync.Mutex
	spans  []*cachedSpan // most recently used last
}

type cachedSpan struct {
	pack       ID
	start, end int64
	body       []byte
}

// otherCopy reads blob id from a pack other than bad, when the index's
// pack tables (prune, verify, repair) name one whose copy is sound; nil
// otherwise.
func (tc *treeCache) otherCopy(ctx context.Context, cd *codec, id ID, bad ID) []byte {
	tc.x.mu.Lock()
	var copies []blobEntry
	for p, es := range tc.x.packs {
		if p == bad {
			continue
		}
		for _, e := range es {
			if e.ID == id {
				copies = append(copies, e)
			}
		}
	}
	tc.x.mu.Unlock()
	for _, e := range copies {
		stored, err := tc.r.getRange(ctx, "packs/"+e.Pack.String(), int64(e.Offset), int64(e.Length))
		if err != nil {
			continue
		}
		if data, err := cd.openInto(e, stored); err == nil {
			tc.r.cfg.Logf("snapshot: tree blob %s is damaged in pack %s; read its copy in pack %s", id, bad, e.Pack)
			return data
		}
	}
	return nil
}

// stored returns a copy of blob id's stored bytes (openInto decrypts in
// place, and the span stays as read), from a cached span or a new one.
func (tc *treeCache) stored(ctx context.Context, id ID, loc location) ([]byte, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	off, end := int64(loc.Offset), int64(loc.Offset)+int64(loc.Length)
	var sp *cachedSpan
	for i, s := range tc.spans {
		if s.pack == loc.Pack && s.start <= off && end <= s.end {
			sp = s
			tc.spans = append(append(tc.spans[:i:i], tc.spans[i+1:]...), s)
			break
		}
	}
	if sp == nil {
		packEnd := max(end, tc.x.packSize(loc.Pack))
		from, to := max(0, off-treeSpanReach), min(packEnd, end+treeSpanReach)
		name := "packs/" + loc.Pack.String()
		body, err := tc.r.getRange(ctx, name, from, to-from)
		if errors.Is(err, errNoKey) {
			return nil, fmt.Errorf("%w: %s is missing (it holds tree blob %s)", errCorrupt, tc.r.key(name), id)
		}
		if err != nil {
			return nil, err
		}
		if int64(len(body)) < end-from {
			return nil, fmt.Errorf("%w: %s: tree blob %s is cut short", errCorrupt, tc.r.key(name), id)
		}
		sp = &cachedSpan{pack: loc.Pack, start: from, end: from + int64(len(body)), body: body}
		if len(tc.spans) == treeSpans {
			tc.spans = tc.spans[1:]
		}
		tc.spans = append(tc.spans, sp)
	}
	return slices.Clone(sp.body[off-sp.start : end-sp.start]), nil
}

const (
	treeSpanReach = 2 << 20 // read this far on each side of a blob missed
	treeSpans     = 4       // ranges kept
)

func newTreeCache(r *Repo, x *index) *treeCache {
	tc := &treeCache{r: r, x: x}
	tc.codecs.New = func() any { return r.newCodec() }
	return tc
}

func (tc *treeCache) legacy() bool { return false }

func (tc *treeCache) dir(ctx context.Context, _ string, sub *ID) ([]entry, error) {
	id := *sub
	if tc.r.onDirRead != nil {
		tc.r.onDirRead(id)
	}
	loc, ok := tc.x.lookup(id)
	if !ok {
		return nil, fmt.Errorf("%w: tree blob %s is in no index", errCorrupt, id)
	}
	stored, err := tc.stored(ctx, id, loc)
	if err != nil {
		return nil, err
	}
	// Opened and decoded outside the lock: prefetchers decode at once.
	cd := tc.codecs.Get().(*codec)
	defer tc.codecs.Put(cd)
	data, err := cd.openInto(blobEntry{ID: id, location: loc}, stored)
	if err != nil {
		err = fmt.Errorf("%w: %s: %v", errCorrupt, tc.r.key("packs/"+loc.Pack.String()), err)
		// Another copy (a prune cut short leaves blobs in two packs)
		// may be sound: with the packs' tables at hand, try each.
		if data = tc.otherCopy(ctx, cd, id, loc.Pack); data == nil {
			return nil, err
		}
	}
	var t tree
	if err := decodeTree(data, &t); err != nil {
		return nil, fmt.Errorf("%w: tree blob %s: %v", errCorrupt, id, err)
	}
	if t.Version != 3 {
		return nil, fmt.Errorf("%w: tree blob %s has version %d inside a version 3 tree", errCorrupt, id, t.Version)
	}
	sorted := true
	for i := range t.Entries {
		if err := checkName(t.Entries[i].Path); err != nil {
			return nil, fmt.Errorf("%w: tree blob %s: %v", errCorrupt, id, err)
		}
		sorted = sorted && (i == 0 || t.Entries[i-1].Path < t.Entries[i].Path)
	}
	if !sorted { // Create writes names in order, each once; another writer may not
		names := make(map[string]bool, len(t.Entries))
		for i := range t.Entries {
			if names[t.Entries[i].Path] {
				return nil, fmt.Errorf("%w: tree blob %s: entry %q is given twice", errCorrupt, id, t.Entries[i].Path)
			}
			names[t.Entries[i].Path] = true
		}
	}
	return t.Entries, nil
}
