package local

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A restore writes the bulk of large files straight to the disk with
// O_DIRECT, past the page cache, where the filesystem allows it:
//
//   - The restored data is on the disk when the restore returns, rather
//     than left to the kernel's writeback (an in-place restore syncs
//     the filesystem before its swap anyway: see swapIn).
//   - Restoring a volume larger than the page cache no longer evicts
//     what the rest of the machine had cached, nor queues behind the
//     kernel's dirty-page throttling.
//   - It is less work: no copy into the page cache, no writeback later.
//     On a virtual machine whose free memory is handed back to the host
//     (Firecracker's free page reporting, here), the first touch of each
//     new page-cache page faults on the host: writing 1.6 GB through
//     the page cache took 3.5-5 s of system time there, against 0.3 s
//     directly (bench/README.md).
//
// Only the part of a chunk between its first and last page boundaries
// in the file goes direct; its edges, small files and chunks, sparse
// files, and any file on a filesystem that does not report its direct
// I/O alignments (statx STATX_DIOALIGN: tmpfs, FUSE, kernels before
// 6.1) are written through the page cache. The two never share a page,
// so the kernel keeps them coherent without flushing anything. The
// decrypted chunk is placed in memory at the phase of its file offset
// (codec.openAt), so the direct part needs no copy.

// directMin: chunks and files smaller than this are written through the
// page cache only.
const directMin = 256 << 10

// directFor reports whether a chunk of n bytes of entry i is worth a
// direct write (if the file's filesystem takes one).
func (w *fileWriter) directFor(i int, n int64) bool {
	e := &w.t.Entries[i]
	return w.direct && n >= directMin && e.Size >= directMin && !e.Sparse && !w.noDirect.Load()
}

// openDirect opens restored file e a second time with O_DIRECT and asks
// its filesystem the alignments. It returns fd -1 and align -1 (the file
// is written through the page cache) where either fails.
func (w *fileWriter) openDirect(e *entry) (fd, align, mem int32) {
	dfd, err := openBeneath(w.root, e.Path, unix.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			w.noDirect.Store(true) // the filesystem has no O_DIRECT
		}
		return -1, -1, 0
	}
	var st unix.Statx_t
	if unix.Statx(dfd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st) != nil || st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_offset_align == 0 || st.Dio_mem_align == 0 {
		unix.Close(dfd)
		w.noDirect.Store(true)
		return -1, -1, 0
	}
	// Offsets on page and block boundaries: a direct write never shares
	// a page with the edges written through the page cache, nor a block
	// (a write of part of a block the filesystem would have to zero
	// first, serialized).
	a := max(int64(st.Dio_offset_align), int64(st.Blksize), dioPage)
	if a > 1<<20 || a&(a-1) != 0 || st.Dio_mem_align > 1<<20 {
		unix.Close(dfd)
		return -1, -1, 0
	}
	return int32(dfd), int32(a), int32(st.Dio_mem_align)
}

// writeDirect writes data at off: the part between its first and last
// align boundaries in the file through dfd (from an aligned copy in
// scratch if data is not aligned in memory there), the edges through fd.
// It returns how many bytes went direct, how many of them were copied to
// be aligned, and whether the kernel refused the direct write (then
// written through the page cache). pw, if not nil, stands in for
// pwriteDirect (tests).
func writeDirect(fd, dfd int, data []byte, off, align int64, mem uintptr, scratch *[]byte, pw func(int, []byte, int64) error) (direct, copied int64, refused bool, err error) {
	a := (off + align - 1) &^ (align - 1)
	b := (off + int64(len(data))) &^ (align - 1)
	if b-a < directMin {
		return 0, 0, false, pwriteAll(fd, data, off)
	}
	if pw == nil {
		pw = pwriteDirect
	}
	mid := data[a-off : b-off]
	if uintptr(unsafe.Pointer(unsafe.SliceData(mid)))%mem != 0 {
		buf := alignedScratch(scratch, len(mid), mem)
		copy(buf, mid)
		mid, copied = buf, int64(len(mid))
	}
	direct = int64(len(mid))
	if err := pw(dfd, mid, a); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			return 0, 0, false, err
		}
		// Refused after all (a filesystem that reports alignments it
		// does not honour): through the page cache.
		direct, copied, refused = 0, 0, true
		if err := pwriteAll(fd, data[a-off:b-off], a); err != nil {
			return 0, 0, true, err
		}
	}
	if err := pwriteAll(fd, data[:a-off], off); err != nil {
		return direct, copied, refused, err
	}
	return direct, copied, refused, pwriteAll(fd, data[b-off:], b)
}

// pwriteDirect writes b at off through an O_DIRECT descriptor. A short
// write (the disk full mid-way) is an error: what is left would not be
// aligned.
func pwriteDirect(fd int, b []byte, off int64) error {
	for {
		n, err := unix.Pwrite(fd, b, off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n != len(b):
			return errShortDirect
		}
		return nil
	}
}

var errShortDirect = errors.New("short direct write (is the disk full?)")

// alignedScratch returns n bytes of *scratch that start on a mem
// boundary, growing it. Used only for a chunk that goes to a second
// place in a file at another phase, or from an unencrypted repository.
func alignedScratch(scratch *[]byte, n int, mem uintptr) []byte {
	need := n + int(mem)
	if cap(*scratch) < need {
		*scratch = make([]byte, need)
	}
	b := (*scratch)[:cap(*scratch)]
	skip := int((mem - uintptr(unsafe.Pointer(unsafe.SliceData(b)))%mem) % mem)
	return b[skip : skip+n : skip+n]
}
