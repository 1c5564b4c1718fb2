package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxOpenFiles bounds the files kept open between two of their chunks;
// past it, a file is closed after each write and opened again.
const maxOpenFiles = 256

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
	fd      int32 // valid while isOpen
	users   int32 // writes in progress
	left    int32 // chunks not yet written
	isOpen  bool
	created bool  // the file exists: later opens do not create it
	written int64 // bytes written
	dfd     int32 // an O_DIRECT descriptor of the file, or -1; valid while isOpen
	dalign  int32 // its offset alignment; 0: not tried yet, -1: no direct writes
	dmem    int32 // its memory alignment
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
	// direct: write the aligned middle of large chunks with O_DIRECT
	// (direct.go); noDirect is set once the filesystem refuses it.
	direct      bool
	noDirect    atomic.Bool
	directBytes atomic.Int64
	copiedBytes atomic.Int64 // of directBytes, copied to be aligned
	// refusedDirect counts direct writes the kernel refused;
	// pwriteDirect, if not nil, stands in for the direct write (tests).
	refusedDirect atomic.Int64
	pwriteDirect  func(fd int, b []byte, off int64) error
}

func (w *fileWriter) write(i int, data []byte, off int64, scratch *[]byte) error {
	of := &w.files[i]
	e := &w.t.Entries[i]
	of.mu.Lock()
	if !of.isOpen {
		// Created by its first write (so that files are created in
		// parallel, by the pack workers), and new: O_EXCL.
		flags, mode := unix.O_WRONLY, uint32(0) // openat2 takes a mode only to create
		if !of.created {
			flags, mode = flags|unix.O_CREAT|unix.O_EXCL, 0o600
		}
		fd, err := openBeneath(w.root, e.Path, flags, mode)
		if err != nil {
			of.mu.Unlock()
			return fmt.Errorf("restore %s: %w", w.show(e), beneathError(err))
		}
		of.fd, of.isOpen, of.created, of.dfd = int32(fd), true, true, -1
		w.open.Add(1)
	}
	if of.dfd < 0 && of.dalign >= 0 && w.directFor(i, int64(len(data))) {
		of.dfd, of.dalign, of.dmem = w.openDirect(e)
	}
	of.users++
	fd, dfd, dalign, dmem := int(of.fd), int(of.dfd), int64(of.dalign), uintptr(of.dmem)
	if dalign < 0 || w.noDirect.Load() {
		dfd = -1 // refused since it was opened
	}
	of.mu.Unlock()

	var err error
	switch {
	case e.Sparse:
		err = writeSparse(fd, data, off)
	case dfd >= 0:
		var n, copied int64
		var refused bool
		n, copied, refused, err = writeDirect(fd, dfd, data, off, dalign, dmem, scratch, w.pwriteDirect)
		w.directBytes.Add(n)
		w.copiedBytes.Add(copied)
		if refused {
			// The filesystem reported alignments it does not honour:
			// the rest of the restore goes through the page cache,
			// rather than trying, and failing, once per chunk.
			w.noDirect.Store(true)
			w.refusedDirect.Add(1)
			of.mu.Lock()
			of.dalign = -1
			if of.users == 1 { // no other write uses the descriptor
				of.closeDirect()
			}
			of.mu.Unlock()
		}
	default:
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
		of.closeDirect()
		if err := finishFile(fd, w.t, e, of.written, w.own, w.warn); err != nil {
			return fmt.Errorf("restore %s: %w", w.show(e), err)
		}
	case of.users == 0 && w.open.Load() > w.maxOpen:
		of.isOpen = false
		w.open.Add(-1)
		of.closeDirect()
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("restore %s: %w", w.show(e), err)
		}
	}
	return nil
}

// closeDirect closes the file's O_DIRECT descriptor, if open (of.mu
// held: another write may have opened it since this one looked).
func (of *openFile) closeDirect() {
	if of.dfd >= 0 {
		unix.Close(int(of.dfd))
		of.dfd = -1
	}
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
			unix.Close(int(of.fd))
			of.closeDirect()
			of.isOpen = false
		}
		of.mu.Unlock()
	}
}

// blobUse is one place a blob goes: a file (entry index) and an offset
// in it. A restore plans one per chunk of every file, so it is kept
// small: the pack by number, the blob's place in it, no location.
type blobUse struct {
	id          ID
	pack        int32  // in planSpans' packs
	offset, end uint32 // the stored blob's bytes in its pack
	file        int32  // entry index
	off         int64  // in the file
}

// span is a run of blobs of one pack read with one ranged GET and
// restored by one worker.
type span struct {
	pack       ID
	start, end int64     // the byte range of the pack
	rank       int32     // the first entry it writes to
	uses       []blobUse // by offset: the uses of one blob follow one another
}

// blobs is how many blobs the span holds.
func (sp *span) blobs() int {
	n := 0
	for i := range sp.uses {
		if i == 0 || sp.uses[i].offset != sp.uses[i-1].offset {
			n++
		}
	}
	return n
}

// Spans are cut at about spanSize bytes, and where a gap of more than
// spanGap bytes of blobs not needed lies between two blobs. A whole pack
// (several MiB) was one task: with a few packs per core, the last one
// restored alone while the other cores idled, and each worker held a
// pack's worth of buffer. Spans of 1 MiB keep the cores busy to the end
// and the buffers small, for about one request per MiB.
const (
	spanSize = 1 << 20
	spanGap  = 64 << 10
)

// planSpans sorts uses by pack and offset and cuts them into spans,
// ordered by the first file each serves, so that files are completed
// (and closed) one after another rather than all kept open. The spans
// share uses' storage.
func planSpans(uses []blobUse, packs []ID) []span {
	sort.Slice(uses, func(i, j int) bool {
		a, b := &uses[i], &uses[j]
		if a.pack != b.pack {
			return a.pack < b.pack
		}
		if a.offset != b.offset {
			return a.offset < b.offset
		}
		if a.file != b.file {
			return a.file < b.file
		}
		return a.off < b.off
	})
	var spans []span
	from := 0
	for i := 1; i <= len(uses); i++ {
		if i < len(uses) {
			a, b := &uses[i-1], &uses[i]
			if a.pack == b.pack && (b.offset == a.offset || int64(b.offset)-int64(a.end) <= spanGap && int64(b.end)-int64(uses[from].offset) <= spanSize) {
				continue
			}
		}
		sp := span{pack: packs[uses[from].pack], start: int64(uses[from].offset), rank: uses[from].file, uses: uses[from:i:i]}
		for _, u := range sp.uses {
			sp.end = max(sp.end, int64(u.end))
			sp.rank = min(sp.rank, u.file)
		}
		spans = append(spans, sp)
		from = i
	}
	sort.Slice(spans, func(i, j int) bool {
		a, b := &spans[i], &spans[j]
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		if c := bytes.Compare(a.pack[:], b.pack[:]); c != 0 {
			return c < 0
		}
		return a.start < b.start
	})
	return spans
}

// interleave reorders spans, sorted by the first file each serves, so
// that spans next to one another serve different files: the workers take
// spans in order, and several writing into one large file at once
// queued on its inode's lock (a write to a file holds it). Files are
// taken width at a time, round robin, so that no more than width are
// being written at once, and still about in order.
func interleave(spans []span, width int) []span {
	if width < 2 || len(spans) < 2 {
		return spans
	}
	var groups [][]span // runs of spans with one first file
	for from, i := 0, 1; i <= len(spans); i++ {
		if i == len(spans) || spans[i].rank != spans[from].rank {
			groups = append(groups, spans[from:i])
			from = i
		}
	}
	if len(groups) == len(spans) {
		return spans // a span per file: nothing to spread
	}
	out := make([]span, 0, len(spans))
	active, next := make([][]span, 0, width), 0
	for len(out) < len(spans) {
		for len(active) < width && next < len(groups) {
			active = append(active, groups[next])
			next++
		}
		kept := active[:0]
		for _, g := range active {
			out = append(out, g[0])
			if len(g) > 1 {
				kept = append(kept, g[1:])
			}
		}
		active = kept
	}
	return out
}

// packProblem is what a restore found wrong with one pack: missing, or
// blobs that do not open. Restore goes on past it to name every one.
type packProblem struct {
	missing bool
	blobs   int // blobs of the snapshot it holds
	bad     []string
}

func (r *Repo) problemsError(problems map[ID]*packProblem) error {
	packs := make([]ID, 0, len(problems))
	for p := range problems {
		packs = append(packs, p)
	}
	sort.Slice(packs, func(i, j int) bool { return bytes.Compare(packs[i][:], packs[j][:]) < 0 })
	var errs []error
	for _, p := range packs {
		pp, name := problems[p], r.key("packs/"+p.String())
		if pp.missing {
			errs = append(errs, fmt.Errorf("%s is missing (it holds %d blob(s) of this snapshot)", name, pp.blobs))
			continue
		}
		sort.Strings(pp.bad)
		errs = append(errs, fmt.Errorf("%s is damaged: %s", name, strings.Join(pp.bad, "; ")))
	}
	return errors.Join(errs...)
}

// restoreSpan reads a span into its codec's reused buffer, opens each
// blob where it lies (decrypted in place) and writes it to every place
// it goes. A missing pack, or blobs that do not open, are returned as
// such, the rest of the span restored; err is what stops the restore.
func (r *Repo) restoreSpan(ctx context.Context, cd *codec, x *index, sp *span, w *fileWriter, done *atomic.Int64) (missing bool, bad []string, err error) {
	name := "packs/" + sp.pack.String()
	body, err := r.read(ctx, name, sp.start, sp.end-sp.start, cd.pbuf[:0])
	if errors.Is(err, errNoKey) {
		return true, nil, nil
	}
	if apiCode(err) == "InvalidRange" {
		err, body = nil, nil // the pack is shorter than the index says: every blob is cut short
	}
	if err != nil {
		return false, nil, err
	}
	if cap(body) <= 64<<20 {
		cd.pbuf = body[:0] // body is not used past this call
	}
	// The pack's own table is not read: the index says where each blob
	// is, and each blob's hash is checked.
	for i := 0; i < len(sp.uses); {
		u := &sp.uses[i]
		j := i + 1
		for j < len(sp.uses) && sp.uses[j].offset == u.offset {
			j++
		}
		pieces := sp.uses[i:j]
		i = j
		from, to := int64(u.offset)-sp.start, int64(u.end)-sp.start
		if to > int64(len(body)) {
			bad = append(bad, fmt.Sprintf("blob %s is cut short", u.id))
			continue
		}
		loc, _ := x.lookup(u.id)
		phase := -1 // where the plaintext goes in memory: anywhere
		if w.directFor(int(u.file), int64(loc.Raw)) {
			phase = int(u.off % dioPage)
		}
		data, err := cd.openAt(blobEntry{ID: u.id, location: loc}, body[from:to], phase)
		if err != nil {
			bad = append(bad, err.Error()+" (file "+w.t.Entries[u.file].Path+")")
			continue
		}
		for _, pc := range pieces {
			if err := w.write(int(pc.file), data, pc.off, &cd.dbuf); err != nil {
				return false, bad, err
			}
			done.Add(int64(len(data)))
		}
	}
	return false, bad, nil
}
