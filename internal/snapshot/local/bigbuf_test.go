package local

import (
	"testing"
	"unsafe"
)

// Buffers handed back are reused, zeroed, once each; a second hand-back
// and a heap buffer are ignored.
func TestBigBufs(t *testing.T) {
	p := bigPool{free: map[int][][]byte{}, maps: map[*byte]*bigMapping{}}
	a := p.get(3 << 20)
	if len(a) != 3<<20 || cap(a) != 3<<20 || p.mapped != 3<<20 {
		t.Fatalf("len %d cap %d, %d bytes mapped", len(a), cap(a), p.mapped)
	}
	a[0], a[len(a)-1] = 7, 9
	p.put(a[:10])
	p.put(a) // twice: ignored
	b := p.get(3 << 20)
	if unsafe.SliceData(b) != unsafe.SliceData(a) {
		t.Fatal("a buffer handed back was not reused")
	}
	if b[0] != 0 || b[len(b)-1] != 0 {
		t.Fatal("a reused buffer still holds its last user's bytes")
	}
	c := p.get(3 << 20)
	if unsafe.SliceData(c) == unsafe.SliceData(b) || p.mapped != 6<<20 {
		t.Fatalf("a buffer in use was handed out again (%d bytes mapped)", p.mapped)
	}
	small := p.get(100)
	p.put(small)
	p.put(make([]byte, 2<<20))
	if n := len(p.free[3<<20]); n != 0 || len(p.free) > 1 {
		t.Fatalf("free lists %v after heap buffers were handed back", p.free)
	}
	p.put(b)
	p.put(c)
	if n := len(p.free[3<<20]); n != 2 {
		t.Fatalf("%d free buffers, want 2", n)
	}
}
