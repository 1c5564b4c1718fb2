package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fastcdc "github.com/jotfs/fastcdc-go"
	"golang.org/x/sync/errgroup"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// chunkerMu orders fastcdc.NewChunker, which rewrites the library's
// global table (with the same values, as the seed is 0), before any
// chunking that reads it: the race detector would rightly complain.
var chunkerMu sync.RWMutex

// Create implements snapshot.Driver: it snapshots cfg.Source.
func (r *Repo) Create(ctx context.Context, opts snapshot.CreateOptions) (snapshot.Snapshot, error) {
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

	started := time.Now().UTC()
	x, err := r.loadIndex(ctx)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	list, err := r.List(ctx)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	prev := map[string]*entry{}
	var parent string
	if len(list) > 0 {
		p := list[len(list)-1]
		if t, err := r.loadTree(ctx, x, p); err != nil {
			// A damaged parent only costs reading every file again.
			r.cfg.Logf("snapshot: previous snapshot %s unreadable, reading every file: %v", p.ID, err)
		} else {
			parent = p.ID
			for i := range t.Entries {
				prev[t.Entries[i].Path] = &t.Entries[i]
			}
		}
	}

	c := &creator{r: r, x: x, src: src, pending: map[ID]bool{}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.pk = newPacker(ctx, r)
	if opts.Progress != nil {
		stop := c.report(opts.Progress)
		defer stop()
	}
	entries, err := c.run(ctx, prev)
	if err != nil {
		c.pk.finish()
		return snapshot.Snapshot{}, err
	}
	st := snapshot.Stats{FilesRead: int(c.filesRead.Load())}
	for _, e := range entries {
		switch e.Type {
		case typeFile:
			st.Files++
			st.Bytes += e.Size
		case typeDir:
			st.Dirs++
		}
	}
	tb, err := json.Marshal(tree{Version: 1, Entries: entries})
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	tid := hashOf(tb)
	if !c.known(tid) {
		stored, z := newCodec().compress(tb)
		if err := c.pk.add(tid, blobTree, stored, z, len(tb)); err != nil {
			c.pk.finish()
			return snapshot.Snapshot{}, err
		}
	}
	packs, err := c.pk.finish()
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	if _, err := r.writeIndex(ctx, packs); err != nil {
		return snapshot.Snapshot{}, err
	}
	st.BytesAdded = c.pk.bytesAdded()
	s := snapshot.Snapshot{ID: snapshotName(started), Time: started, Parent: parent, Host: hostname(), Source: src, Tree: tid.String(), Stats: st}
	body, _ := json.MarshalIndent(s, "", "  ")
	if err := r.put(ctx, "snapshots/"+s.ID, body, true); err != nil {
		return snapshot.Snapshot{}, err
	}
	return s, nil
}

// creator is one Create in progress.
type creator struct {
	r   *Repo
	x   *index
	src string
	pk  *packer

	mu      sync.Mutex
	pending map[ID]bool // blobs added by this run

	files, bytes, filesRead atomic.Int64
	total                   atomic.Int64
}

// known reports whether the blob is stored or being stored; if not, it
// marks it as being stored by the caller.
func (c *creator) known(id ID) bool {
	if _, ok := c.x.lookup(id); ok {
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
}

// run walks the source and stores every new chunk. Unchanged files (same
// size, mtime and inode as in the parent, chunks all indexed) are not read.
func (c *creator) run(ctx context.Context, prev map[string]*entry) ([]entry, error) {
	var entries []entry
	err := filepath.WalkDir(c.src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", p, err)
		}
		if p == c.src {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we walk
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(c.src, p)
		e := entry{Path: filepath.ToSlash(rel), Mode: uint32(info.Mode().Perm() | info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)), MTime: info.ModTime().UnixNano()}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			e.Inode = st.Ino
		}
		switch {
		case info.Mode().IsRegular():
			e.Type, e.Size = typeFile, info.Size()
			c.total.Add(e.Size)
		case info.IsDir():
			e.Type = typeDir
		case info.Mode()&fs.ModeSymlink != 0:
			e.Type = typeSymlink
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			c.r.cfg.Logf("snapshot: skipping %s: not a file, directory or symlink", p)
			return nil
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}

	g, gctx := errgroup.WithContext(ctx)
	work := make(chan int, 64)
	chunks := make(chan chunk, 2*c.r.cfg.Workers)
	g.Go(func() error {
		defer close(work)
		for i := range entries {
			e := &entries[i]
			if e.Type != typeFile {
				continue
			}
			if old := prev[e.Path]; old != nil && old.Type == typeFile && old.Size == e.Size && old.MTime == e.MTime && old.Inode == e.Inode && c.allIndexed(old.Chunks) {
				e.Chunks = old.Chunks
				c.files.Add(1)
				c.bytes.Add(e.Size)
				continue
			}
			select {
			case work <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var readers sync.WaitGroup
	for i := 0; i < c.r.cfg.Workers; i++ {
		readers.Add(1)
		g.Go(func() error {
			defer readers.Done()
			for i := range work {
				if err := c.readFile(gctx, &entries[i], chunks); err != nil {
					return err
				}
			}
			return nil
		})
	}
	go func() { readers.Wait(); close(chunks) }()
	for i := 0; i < c.r.cfg.Workers; i++ {
		g.Go(func() error {
			cd := newCodec()
			for ch := range chunks {
				if gctx.Err() != nil {
					continue // drain
				}
				stored, z := cd.compress(ch.data)
				if err := c.pk.add(ch.id, blobData, stored, z, len(ch.data)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return entries, nil
}

func (c *creator) allIndexed(ids []ID) bool {
	for _, id := range ids {
		if _, ok := c.x.lookup(id); !ok {
			return false
		}
	}
	return true
}

// readFile chunks one file, hashes each chunk and sends the new ones on.
func (c *creator) readFile(ctx context.Context, e *entry, out chan<- chunk) error {
	p := filepath.Join(c.src, filepath.FromSlash(e.Path))
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		e.Size = 0 // removed since the walk: an empty file keeps the tree sound
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	defer f.Close()
	c.filesRead.Add(1)
	c.files.Add(1)
	// emit hashes a chunk and sends it on when new; data is copied
	// then only, as the chunker reuses its buffer.
	emit := func(data []byte, owned bool) error {
		id := hashOf(data)
		e.Chunks = append(e.Chunks, id)
		c.bytes.Add(int64(len(data)))
		if c.known(id) {
			return nil
		}
		if !owned {
			data = append([]byte(nil), data...)
		}
		select {
		case out <- chunk{id: id, data: data}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var size int64
	if e.Size <= int64(c.r.rc.Chunker.Min) {
		// Small files are one chunk, as FastCDC would cut them.
		data, err := io.ReadAll(io.LimitReader(f, int64(c.r.rc.Chunker.Min)+1))
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if len(data) > c.r.rc.Chunker.Min {
			// Grew since the walk: snapshot what the walk saw.
			data = data[:e.Size]
		}
		e.Size = int64(len(data))
		if len(data) == 0 {
			return nil
		}
		return emit(data, true)
	}
	chunkerMu.Lock()
	ch, err := fastcdc.NewChunker(io.LimitReader(f, e.Size), fastcdc.Options{
		MinSize: c.r.rc.Chunker.Min, AverageSize: c.r.rc.Chunker.Avg, MaxSize: c.r.rc.Chunker.Max,
	})
	chunkerMu.Unlock()
	if err != nil {
		return err
	}
	for {
		chunkerMu.RLock()
		k, err := ch.Next()
		chunkerMu.RUnlock()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		size += int64(k.Length)
		if err := emit(k.Data, false); err != nil {
			return err
		}
	}
	// A file that shrank while read is recorded as read.
	e.Size = size
	return nil
}
