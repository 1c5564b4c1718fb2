package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Create implements snapshot.Driver: it snapshots cfg.Source.
func (r *Repo) Create(ctx context.Context, opts snapshot.CreateOptions) (snapshot.Snapshot, error) {
	defer tightGC()()
	src := r.cfg.Source
	if src == "" || !filepath.IsAbs(src) {
		return snapshot.Snapshot{}, fmt.Errorf("snapshot source %q must be an absolute directory", src)
	}
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		return snapshot.Snapshot{}, fmt.Errorf("snapshot source %s is not a directory: %v", src, err)
	}
	lk, err := r.lock(ctx, "create", false)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	defer lk.release()
	// Everything below runs under the lock's context: a lost lock
	// cancels the uploads, and is checked before the index and the
	// snapshot object, which a prune that took the lock as stale could
	// have made point at deleted packs.
	ctx = lk.ctx

	started := time.Now().UTC()
	x, err := r.loadLookupIndex(ctx)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	list, err := r.List(ctx)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	srcFD, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("snapshot source %s: %w", src, err)
	}
	defer unix.Close(srcFD)
	c := &creator{r: r, x: x, src: src, srcFD: srcFD, pending: map[ID]bool{}, links: map[[2]uint64]string{}}
	var parent string
	var rootOld *ID
	if len(list) > 0 {
		p := list[len(list)-1]
		if par, sub, err := r.openParent(ctx, x, p); err != nil {
			// A damaged parent only costs reading every file again.
			r.cfg.Logf("snapshot: previous snapshot %s unreadable, reading every file: %v", p.ID, err)
		} else {
			parent, c.par, rootOld = p.ID, par, sub
		}
	}
	c.bufs.New = func() any { return new([]byte) }
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.pk = newPacker(ctx, r)
	c.pk.crash = crashCreatePack
	c.tpk = newPackerSize(ctx, r, treePackSize(r))
	c.tpk.crash = crashCreatePack
	// The new packs' tables go to index objects as they fill, not all
	// at the end: memory stays bounded, and what a create cut short
	// stored is found by the next one (a kill leaves indexed packs that
	// no snapshot uses, which prune removes).
	flush := func(packs []sealedPack) error {
		if err := lk.check(); err != nil {
			return fmt.Errorf("snapshot not written: %w", err)
		}
		_, err := r.writeIndex(ctx, packs)
		crashCreateIndex.hit()
		return err
	}
	c.pk.flush, c.tpk.flush = flush, flush
	if opts.Progress != nil {
		go c.scanTotal(ctx)
		stop := c.report(opts.Progress)
		defer stop()
	}
	finish := func() ([]sealedPack, error) {
		packs, err := c.pk.finish()
		tpacks, terr := c.tpk.finish()
		return append(packs, tpacks...), errors.Join(err, terr)
	}
	if err := c.run(ctx, rootOld); err != nil {
		finish()
		if lerr := lk.check(); lerr != nil {
			return snapshot.Snapshot{}, fmt.Errorf("snapshot not written: %w", lerr)
		}
		return snapshot.Snapshot{}, err
	}
	st := snapshot.Stats{FilesRead: int(c.filesRead.Load()), Files: int(c.stFiles.Load()), Dirs: int(c.stDirs.Load()), Bytes: c.stBytes.Load()}
	tid, err := c.putTree(r.newCodec(), tree{Version: treeVersion, Entries: []entry{c.root}})
	if err != nil {
		finish()
		return snapshot.Snapshot{}, err
	}
	packs, err := finish()
	if err := lk.check(); err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("snapshot not written: %w", err)
	}
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	_, err = r.writeIndex(ctx, packs)
	crashCreateIndex.hit()
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	st.BytesAdded = c.pk.bytesAdded() + c.tpk.bytesAdded()
	s := snapshot.Snapshot{ID: snapshotName(started), Time: started, Parent: parent, Host: hostname(), Source: src, Tree: tid.String(), Stats: st, Tags: opts.Tags}
	if err := lk.check(); err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("snapshot not written: %w", err)
	}
	err = r.putSnapshot(ctx, s)
	crashCreateSnapshot.hit()
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	return s, nil
}

// creator is one Create in progress.
type creator struct {
	r     *Repo
	x     *index
	src   string
	srcFD int // the source directory, which every path is opened beneath
	pk    *packer

	mu      sync.Mutex
	pending map[ID]bool // blobs added by this run

	files, bytes, filesRead atomic.Int64
	total                   atomic.Int64

	bufs sync.Pool // *[]byte of up to a chunk: new chunks, keptPrefix

	tpk   *packer              // tree blobs, in packs of their own
	par   parentTree           // the parent snapshot's directories; nil: none
	root  entry                // the source directory's own entry
	links map[[2]uint64]string // (device, inode) -> first path of a file with several links (walker only)

	stFiles, stDirs, stBytes atomic.Int64 // Stats, added as directories end
}

// known reports whether the blob is stored or being stored; if not, it
// marks it as being stored by the caller.
func (c *creator) known(id ID) bool {
	if c.x.has(id) {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[id] {
		return true
	}
	c.pending[id] = true
	return false
}

func (c *creator) report(fn func(snapshot.Progress)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn(snapshot.Progress{Files: c.files.Load(), Bytes: c.bytes.Load(), TotalBytes: c.total.Load(), BytesAdded: c.pk.bytesAdded()})
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// chunk is a new blob on its way to the packer.
type chunk struct {
	id   ID
	data []byte
	buf  *[]byte // data's buffer, back to creator.bufs once packed
}

// run walks the source (walk.go) and stores every new chunk and every
// new directory blob; c.root is then the source's entry, its Sub set.
// Unchanged files (same size, mtime and inode as in the parent, chunks
// all indexed) are not read. rootOld is the parent's blob of the source
// directory, if any.
func (c *creator) run(ctx context.Context, rootOld *ID) error {
	root, _, ok, err := c.statEntry(unix.AT_FDCWD, c.src, c.src)
	if err != nil {
		return err
	}
	if !ok || root.Type != typeDir {
		return fmt.Errorf("snapshot source %s is not a directory", c.src)
	}
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan fileJob, 64)
	// Readers run ahead of the compressors: a longer queue would only
	// hold more chunk buffers (up to 4 MiB each).
	chunks := make(chan chunk, 1)
	root.Path = "."
	c.root = root
	// Directories are prepared (listed, described, the parent's entries
	// read) ahead of the walker, by as many prefetchers as workers, at
	// most 4 per worker ahead: the walk uses every core even when no
	// file is read, as in a snapshot of an unchanged volume.
	pf := c.startPrefetch(gctx, c.r.cfg.Workers, 4*c.r.cfg.Workers)
	defer pf.stop()
	g.Go(func() error {
		defer close(work)
		return c.walkDir(gctx, newDirState(nil, 0, ".", rootOld), work, c.r.newCodec(), pf)
	})
	var readers sync.WaitGroup
	for i := 0; i < c.r.cfg.Workers; i++ {
		readers.Add(1)
		g.Go(func() error {
			defer readers.Done()
			cut := newCDC(c.r.rc.Chunker.Min, c.r.rc.Chunker.Avg, c.r.rc.Chunker.Max, c.r.gear)
			defer cut.free()
			cd := c.r.newCodec()
			for j := range work {
				if gctx.Err() != nil {
					continue // drain
				}
				if err := c.readFile(gctx, &j.dir.kids[j.i], j.rel, j.old, cut, chunks); err != nil {
					return err
				}
				if err := c.finishDir(j.dir, cd); err != nil {
					return err
				}
			}
			return nil
		})
	}
	go func() { readers.Wait(); close(chunks) }()
	for i := 0; i < c.r.cfg.Workers; i++ {
		g.Go(func() error {
			cd := c.r.newCodec()
			for ch := range chunks {
				if gctx.Err() != nil {
					c.bufs.Put(ch.buf)
					continue // drain
				}
				stored, z := cd.storeTemp(ch.id, ch.data)
				err := c.pk.add(ch.id, blobData, stored, z, len(ch.data))
				c.bufs.Put(ch.buf)
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if c.root.Sub == nil {
		return errors.New("snapshot: the walk ended before every directory did") // a bug, never a partial tree
	}
	return nil
}

func (c *creator) allIndexed(ids []ID) bool {
	for _, id := range ids {
		if !c.x.has(id) {
			return false
		}
	}
	return true
}

// readFile chunks one file, hashes each chunk and sends the new ones on.
// With the parent's entry of the same path (old), the chunks of the old
// file that are still there byte for byte are kept without chunking: see
// keptPrefix.
func (c *creator) readFile(ctx context.Context, e *entry, rel string, old *entry, cut *cdc, out chan<- chunk) error {
	p := filepath.Join(c.src, filepath.FromSlash(rel))
	if c.r.onRead != nil {
		c.r.onRead(rel)
	}
	// Reached from the source's descriptor, following no symlink: a file
	// (or a directory on its path) swapped for a symlink to a file
	// outside the source since the walk is not read; nor is a FIFO put in
	// its place (O_NONBLOCK: opening one would block).
	fd, err := openBeneath(c.srcFD, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		e.Size = 0 // removed since the walk: an empty file keeps the tree sound
		return nil
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EXDEV) {
		c.r.cfg.Logf("snapshot: %s became a symlink, or a path through one, since the walk; recorded empty", p)
		e.Size = 0
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	} else if !st.Mode().IsRegular() {
		c.r.cfg.Logf("snapshot: %s is no longer a regular file since the walk; recorded empty", p)
		e.Size = 0
		return nil
	}
	c.filesRead.Add(1)
	c.files.Add(1)
	// emit hashes a chunk and sends it on when new. data is in buf, a
	// buffer of c.bufs, or (buf nil) in the chunker's buffer, which is
	// reused: it is copied into one of c.bufs then only.
	emit := func(data []byte, buf *[]byte) error {
		id := c.r.sealer.blobID(data)
		e.Chunks = append(e.Chunks, id)
		c.bytes.Add(int64(len(data)))
		if c.known(id) {
			if buf != nil {
				c.bufs.Put(buf)
			}
			return nil
		}
		if buf == nil {
			buf = c.bufs.Get().(*[]byte)
			*buf = append((*buf)[:0], data...)
			data = *buf
		}
		select {
		case out <- chunk{id: id, data: data, buf: buf}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var size int64 // bytes chunked so far
	if e.Size <= int64(c.r.rc.Chunker.Min) {
		// Small files are one chunk, as FastCDC would cut them.
		buf := c.bufs.Get().(*[]byte)
		if cap(*buf) <= c.r.rc.Chunker.Min {
			*buf = make([]byte, c.r.rc.Chunker.Min+1)
		}
		n, err := io.ReadFull(f, (*buf)[:c.r.rc.Chunker.Min+1])
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			c.bufs.Put(buf)
			return fmt.Errorf("read %s: %w", p, err)
		}
		data := (*buf)[:n]
		if len(data) > c.r.rc.Chunker.Min {
			// Grew since the walk: snapshot what the walk saw.
			data = data[:e.Size]
		}
		e.Size = int64(len(data))
		if len(data) == 0 {
			c.bufs.Put(buf)
			return nil
		}
		return emit(data, buf)
	}
	var start int64
	if old != nil && len(old.Chunks) > 0 {
		kept, end, err := c.keptPrefix(ctx, f, e.Size, old)
		if err != nil {
			return err
		}
		e.Chunks = append(e.Chunks, kept...)
		c.bytes.Add(end)
		start, size = end, end
		if start == e.Size {
			return nil // same content: only the metadata changed
		}
	}
	if c.r.onChunk != nil {
		c.r.onChunk(rel, start)
	}
	cut.reset(io.NewSectionReader(f, start, e.Size-start))
	for {
		k, err := cut.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		size += int64(len(k))
		if err := emit(k, nil); err != nil {
			return err
		}
	}
	// A file that shrank while read is recorded as read.
	e.Size = size
	return nil
}

// keptPrefix finds how much of the parent's version of a file (old) is
// still there: it hashes, in parallel, the byte ranges of old's chunks in
// the file as it is now, in order, and stops at the first that differs.
// It returns those chunks and where the file must be chunked from.
//
// Every boundary FastCDC cut in old but the last is content-defined (or a
// maximum-size cut): it depends only on the bytes since the previous
// boundary, never on what follows. So chunking the file now from its
// first byte would cut the same chunks up to the first one that differs,
// and chunking from the end of the kept ones gives exactly the chunks a
// full read would, at the cost of hashing the kept bytes only. The last
// chunk of old was cut by the end of the file: it is kept only when the
// file still ends there. An appended log is read once at hashing speed,
// then only its tail is chunked; a file changed in the middle is chunked
// from the chunk that changed; a rewritten one from its start. Hashes, not
// sizes, mtimes or inodes, decide: what is kept is the current content.
func (c *creator) keptPrefix(ctx context.Context, f *os.File, size int64, old *entry) ([]ID, int64, error) {
	n := len(old.Chunks)
	ends := make([]int64, n)
	var off int64
	for i, id := range old.Chunks {
		loc, ok := c.x.lookup(id)
		if !ok {
			return nil, 0, nil
		}
		off += int64(loc.Raw)
		ends[i] = off
	}
	m := n // candidates: old.Chunks[:m]
	if ends[n-1] != size {
		m = n - 1
	}
	for m > 0 && ends[m-1] > size {
		m--
	}
	if m == 0 {
		return nil, 0, nil
	}
	var next atomic.Int64
	var bad atomic.Int64 // first chunk that differs, m if none
	bad.Store(int64(m))
	lower := func(k int64) {
		for {
			b := bad.Load()
			if k >= b || bad.CompareAndSwap(b, k) {
				return
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for w := 0; w < min(c.r.cfg.Workers, m); w++ {
		g.Go(func() error {
			buf := c.bufs.Get().(*[]byte)
			defer c.bufs.Put(buf)
			for {
				k := next.Add(1) - 1
				if k >= bad.Load() {
					return nil
				}
				if err := gctx.Err(); err != nil {
					return err
				}
				var from int64
				if k > 0 {
					from = ends[k-1]
				}
				length := int(ends[k] - from)
				if cap(*buf) < length {
					*buf = make([]byte, length)
				}
				b := (*buf)[:length]
				if _, err := f.ReadAt(b, from); err != nil {
					// Shorter than the walk saw, or unreadable here:
					// chunking from k reads it again and decides.
					lower(k)
					return nil
				}
				if c.r.sealer.blobID(b) != old.Chunks[k] {
					lower(k)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	k := int(bad.Load())
	if k == 0 {
		return nil, 0, nil
	}
	return old.Chunks[:k:k], ends[k-1], nil
}
