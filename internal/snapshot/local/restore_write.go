package local

import (
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

// piece is where one blob goes: a file and an offset.
type piece struct {
	file int // entry index
	off  int64
}

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
	fd      int // valid while isOpen
	isOpen  bool
	created bool  // the file exists: later opens do not create it
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
		of.fd, of.isOpen, of.created = fd, true, true
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

// corruptError is a missing or damaged object: restore and verify go on
// past it to name every one.
type corruptError struct{ msg string }

func (e corruptError) Error() string { return e.msg }

func (r *Repo) restorePack(ctx context.Context, cd *codec, x *index, pack ID, blobs map[ID][]piece, w *fileWriter, done *atomic.Int64) error {
	name := "packs/" + pack.String()
	body, err := r.getInto(ctx, name, cd.pbuf)
	if errors.Is(err, errNoKey) {
		return corruptError{fmt.Sprintf("%s is missing (it holds %d blob(s) of this snapshot)", r.key(name), len(blobs))}
	}
	if err != nil {
		return err
	}
	if cap(body) <= 64<<20 {
		cd.pbuf = body[:0] // body is not used past this call
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
