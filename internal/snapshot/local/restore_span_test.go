package local

import (
	"context"
	"fmt"
	"math/rand"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// TestPlanSpans: every use is in exactly one span; a span reads one pack
// within spanSize (unless one blob is bigger), holds every use of each
// of its blobs, and spans come in the order of the first file they
// serve.
func TestPlanSpans(t *testing.T) {
	rng := rand.New(rand.NewSource(21))
	packs := []ID{{1}, {2}, {3}}
	var uses []blobUse
	type blobKey struct {
		pack   int32
		offset uint32
	}
	var blobs []blobUse
	for p := range packs {
		off := uint32(0)
		for off < 6<<20 {
			n := uint32(1 + rng.Intn(300<<10))
			if rng.Intn(40) == 0 {
				n = 3 << 20 // bigger than a span
			}
			if rng.Intn(3) > 0 { // else: a blob not needed, a gap
				blobs = append(blobs, blobUse{id: ID{byte(p), byte(off), byte(off >> 8), byte(off >> 16)}, pack: int32(p), offset: off, end: off + n})
			}
			off += n
		}
	}
	for f := 0; f < 2000; f++ {
		b := blobs[rng.Intn(len(blobs))]
		b.file, b.off = int32(f), int64(rng.Intn(1<<30))
		uses = append(uses, b)
	}
	total := len(uses)
	spans := planSpans(uses, packs)
	seen := 0
	where := map[blobKey]int{} // blob -> its span
	for i, sp := range spans {
		if i > 0 && spans[i-1].rank > sp.rank {
			t.Fatalf("span %d (first file %d) comes after one that starts at file %d", i, sp.rank, spans[i-1].rank)
		}
		first := sp.uses[0].file
		for j, u := range sp.uses {
			if packs[u.pack] != sp.pack {
				t.Fatalf("span %d of pack %x holds a blob of pack %x", i, sp.pack[:1], packs[u.pack][:1])
			}
			if int64(u.offset) < sp.start || int64(u.end) > sp.end {
				t.Fatalf("span %d [%d,%d) holds a blob at [%d,%d)", i, sp.start, sp.end, u.offset, u.end)
			}
			if j > 0 && u.offset < sp.uses[j-1].offset {
				t.Fatalf("span %d: blobs out of order", i)
			}
			k := blobKey{u.pack, u.offset}
			if s, ok := where[k]; ok && s != i {
				t.Fatalf("blob at %d of pack %d is in spans %d and %d", u.offset, u.pack, s, i)
			}
			where[k] = i
			first = min(first, u.file)
			seen++
		}
		if first != sp.rank {
			t.Fatalf("span %d ranked %d, its first file is %d", i, sp.rank, first)
		}
		if sp.end-sp.start > spanSize && sp.blobs() > 1 {
			t.Fatalf("span %d reads %d bytes for %d blobs, more than %d", i, sp.end-sp.start, sp.blobs(), spanSize)
		}
	}
	if seen != total {
		t.Fatalf("spans hold %d uses, want %d", seen, total)
	}
	if len(spans) < 3*4 {
		t.Fatalf("%d spans for 3 packs of 6 MiB: not cut", len(spans))
	}
}

// TestRestoreManySpans: many small files, some sharing content, in packs
// read as many spans by several workers, come back byte for byte with
// their metadata.
func TestRestoreManySpans(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	r.cfg.Uploads = 3
	rng := rand.New(rand.NewSource(22))
	mt := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var kept [][]byte
	for i := 0; i < 600; i++ {
		var data []byte
		switch {
		case i%7 == 6 && len(kept) > 0:
			data = kept[rng.Intn(len(kept))]
		case i%3 == 0:
			data = randBytes(rng, rng.Intn(20<<10))
		default:
			data = logText(rng, rng.Intn(8<<10))
		}
		kept = append(kept, data)
		writeFile(t, filepath.Join(b.src, fmt.Sprintf("d%02d/f%04d", i%23, i)), data, 0o640, mt.Add(time.Duration(i)*time.Second))
	}
	writeFile(t, filepath.Join(b.src, "big.bin"), randBytes(rng, 5<<20), 0o600, mt)
	s, err := r.Create(context.Background(), snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x, err := r.loadIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(x.packs) < 3 {
		t.Fatalf("%d packs: the test wants several (PackSize 1 MiB)", len(x.packs))
	}
	restoreAndCompare(t, r, s.ID, b.src)
}

// interleave spreads the spans of one file among those of others, width
// files at a time, each file's spans still in order; every span is kept
// once.
func TestInterleaveSpans(t *testing.T) {
	var spans []span
	for _, g := range []struct {
		rank int32
		n    int
	}{{0, 4}, {1, 1}, {2, 2}, {5, 3}} {
		for i := 0; i < g.n; i++ {
			spans = append(spans, span{rank: g.rank, start: int64(i)})
		}
	}
	got := interleave(append([]span(nil), spans...), 2)
	var order []string
	for _, sp := range got {
		order = append(order, fmt.Sprintf("%d.%d", sp.rank, sp.start))
	}
	want := "0.0 1.0 0.1 2.0 0.2 2.1 0.3 5.0 5.1 5.2"
	if s := strings.Join(order, " "); s != want {
		t.Fatalf("order %s, want %s", s, want)
	}
	if got := interleave(append([]span(nil), spans...), 1); !reflect.DeepEqual(got, spans) {
		t.Fatal("width 1 reordered the spans")
	}
	one := []span{{rank: 0}, {rank: 1}, {rank: 2}}
	if got := interleave(one, 4); !reflect.DeepEqual(got, one) {
		t.Fatal("a span per file was reordered")
	}
}
