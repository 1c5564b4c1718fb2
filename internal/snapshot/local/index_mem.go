package local

import (
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The sorted runs of a large index live outside the Go heap, in an
// anonymous mapping unmapped once the index is unreachable.
//
// They are most of what a snapshot of an unchanged volume holds (56 MB
// for 1,000,000 blobs), hold no pointers, and change no more once
// loaded: on the heap, the collector lets the heap grow to twice what is
// live before it runs (GOGC=100), so the runs cost their size again in
// headroom that nothing else needed, and the peak RSS was about three
// times the live heap. Outside it, the heap's goal follows the rest.
//
// Nothing keeps a slice of the runs past the index's own life: they are
// read through its methods (find, each, blobSet, which holds the index).
const offHeapMin = 1 << 16 // entries; a smaller index stays on the heap

// entriesFor returns room for n entries for owner's runs: mapped outside
// the heap when n is large, unmapped by a cleanup once owner is
// unreachable; on the heap when n is small or mapping fails.
func entriesFor(owner *index, n int) []slotEntry {
	if n < offHeapMin {
		return make([]slotEntry, n)
	}
	mem, err := unix.Mmap(-1, 0, n*int(unsafe.Sizeof(slotEntry{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]slotEntry, n)
	}
	owner.unmapped = new(atomic.Bool)
	runtime.AddCleanup(owner, func(a cleanupArg) {
		unix.Munmap(a.mem)
		a.done.Store(true)
	}, cleanupArg{mem, owner.unmapped})
	return unsafe.Slice((*slotEntry)(unsafe.Pointer(unsafe.SliceData(mem))), n)
}

type cleanupArg struct {
	mem  []byte
	done *atomic.Bool
}
