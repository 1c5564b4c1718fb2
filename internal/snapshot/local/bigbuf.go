package local

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Large, pointer-free working buffers (the chunkers' windows, pack
// buffers) live outside the Go heap, as the index's runs do (see
// index_mem.go): on the heap they counted toward the collector's goal,
// which let the heap grow by half their size again before a collection.
//
// The mappings are never unmapped: a buffer handed back has its pages
// released to the kernel (MADV_DONTNEED: no longer resident; read again,
// they are zeros) and waits in a free list for the next user of its
// size. So a late reader of a buffer already handed back (an HTTP
// transport may read a request's body after the request returned) reads
// zeros or another pack's bytes for a request that failed anyway, and
// never faults. What was mapped stays bounded by the most buffers ever
// in use at once.
type bigPool struct {
	mu     sync.Mutex
	free   map[int][][]byte      // whole mappings by size
	maps   map[*byte]*bigMapping // by a mapping's first byte
	mapped int64                 // bytes, for tests
}

type bigMapping struct {
	size  int
	inUse bool
}

var bigBufs = bigPool{free: map[int][][]byte{}, maps: map[*byte]*bigMapping{}}

// bigMin: smaller buffers stay on the heap.
const bigMin = 1 << 20

// get returns a buffer of length and capacity n, outside the heap when n
// is large and mapping works, on the heap otherwise.
func (p *bigPool) get(n int) []byte {
	if n < bigMin {
		return make([]byte, n)
	}
	size := (n + 4095) &^ 4095
	p.mu.Lock()
	defer p.mu.Unlock()
	if list := p.free[size]; len(list) > 0 {
		b := list[len(list)-1]
		p.free[size] = list[:len(list)-1]
		p.maps[&b[0]].inUse = true
		return b[:n:n]
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n)
	}
	p.maps[&mem[0]] = &bigMapping{size: size, inUse: true}
	p.mapped += int64(size)
	return mem[:n:n]
}

// put hands back a buffer from get (any slice of it that starts where it
// does): a heap buffer, or one already handed back, is left alone.
func (p *bigPool) put(b []byte) {
	if cap(b) == 0 {
		return
	}
	base := unsafe.SliceData(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.maps[base]
	if !ok || !m.inUse {
		return
	}
	whole := unsafe.Slice(base, m.size)
	unix.Madvise(whole, unix.MADV_DONTNEED)
	m.inUse = false
	p.free[m.size] = append(p.free[m.size], whole)
}
