package local

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
)

const indexMagic = "CVYIDX01"

// indexMagicCompact starts a version 3 index object: per pack its ID,
// its blob count and their compact entries (entry.go).
const indexMagicCompact = "CVYIDX03"

// index maps every blob to a location. Built from the index objects.
//
// A repository of a million small files has about as many blobs, and the
// index is most of what a snapshot of an unchanged volume holds. So what
// the index objects say is loaded in bulk into sorted runs: the blobs by
// the first bits of their ID (uniformly spread: IDs are hashes) into
// buckets sized ahead from the objects' sizes, each sorted once loaded,
// 52 bytes a blob and nothing else (a Go map took about 75, its tables
// half full after each growth, and the collector's headroom doubles what
// is held). A lookup is a binary search in one bucket. What is added
// afterwards, a pack at a time (Create's new blobs, repair's packs),
// goes to a map. Each blob is held as a 20-byte slot naming its pack by
// number, not as a location with the pack's 32-byte ID; each pack's
// table (what prune, verify and repair walk) is kept only when asked for
// (loadIndex's full).
type index struct {
	mu      sync.Mutex
	blobs   map[ID]slot   // added a pack at a time
	runs    [][]slotEntry // loaded in bulk: by the ID's first runBits bits, sorted, each ID once
	runBits uint
	dups    map[ID]bool // blobs found in two packs of the runs (prune keeps one copy)
	// unmapped: set once the runs' mapping is gone (nil: on the heap).
	unmapped *atomic.Bool
	packIDs  []ID    // pack number -> ID
	packEnd  []int64 // pack number -> end of its last blob known
	packNum  map[ID]uint32
	files    []string           // index object names read
	packs    map[ID][]blobEntry // pack -> its blobs; nil when not kept
}

// slot is a blob's location with its pack by number.
type slot struct {
	pack                uint32
	typ                 byte
	compressed          bool
	offset, length, raw uint32
}

// slotEntry is a blob of a sorted run.
type slotEntry struct {
	id ID
	s  slot
}

func newIndex() *index {
	return &index{blobs: map[ID]slot{}, packNum: map[ID]uint32{}, packs: map[ID][]blobEntry{}}
}

// newLookupIndex is an index that keeps no pack tables.
func newLookupIndex() *index {
	x := newIndex()
	x.packs = nil
	return x
}

// indexEntryBytes is about what a blob takes in a stored index object:
// its 46 bytes, which zstd barely compresses (the 32 of the ID not at
// all; 44.8 measured over 917,000 blobs), a little under, so that runs
// are rarely too small (one that is grows as a slice does).
const indexEntryBytes = 44

// compactEntryBytes is the same for compact entries (version 3): 37 to
// 40 bytes, of which zstd takes little; the ID and a byte at least, so
// that runs are sized for more blobs than there are (room never written
// to costs no memory: a large index's runs are mapped, see index_mem.go).
const compactEntryBytes = 33

// reserve makes the sorted runs for about n blobs: a bucket for every
// 4,096 or so (a binary search of 12 steps), each with room for its
// expected share and two standard deviations more (5% more in all). A
// bucket that proves too small grows as a slice does: one of many, so
// it costs little.
func (x *index) reserve(n int) {
	bits := uint(4)
	for bits < 20 && n>>bits > 4096 {
		bits++
	}
	x.runBits = bits
	x.runs = make([][]slotEntry, 1<<bits)
	mean := float64(n) / float64(len(x.runs))
	c := int(mean + 2*math.Sqrt(mean) + 1)
	room := entriesFor(x, c*len(x.runs)) // see index_mem.go
	for i := range x.runs {
		x.runs[i] = room[i*c : i*c : (i+1)*c]
	}
}

func (x *index) run(id ID) int {
	return int(binary.BigEndian.Uint32(id[:4]) >> (32 - x.runBits))
}

// packNumber returns pack's number, adding it; x.mu is held.
func (x *index) packNumber(sp sealedPack) uint32 {
	n, ok := x.packNum[sp.ID]
	if !ok {
		n = uint32(len(x.packIDs))
		x.packNum[sp.ID] = n
		x.packIDs = append(x.packIDs, sp.ID)
		x.packEnd = append(x.packEnd, 0)
	}
	if x.packs != nil {
		x.packs[sp.ID] = sp.Entries
	}
	return n
}

// loadPack adds a pack's blobs to the sorted runs (reserve first, freeze
// after the last).
func (x *index) loadPack(sp sealedPack) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.packNumber(sp)
	for _, e := range sp.Entries {
		b := x.run(e.ID)
		x.runs[b] = append(x.runs[b], slotEntry{e.ID, slot{pack: n, typ: e.Type, compressed: e.Compressed, offset: e.Offset, length: e.Length, raw: e.Raw}})
		x.packEnd[n] = max(x.packEnd[n], int64(e.Offset)+int64(e.Length))
	}
}

// freeze sorts each run, drops a blob's second copy (a prune cut short
// leaves a blob in two packs; either is good) and trims a run with much
// room to spare, on every core.
func (x *index) freeze() {
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	const step = 64
	var mu sync.Mutex
	x.dups = map[ID]bool{}
	for from := 0; from < len(x.runs); from += step {
		g.Go(func() error {
			for i := from; i < min(from+step, len(x.runs)); i++ {
				r := x.runs[i]
				slices.SortFunc(r, compareEntries)
				for j := 1; j < len(r); j++ {
					if r[j].id == r[j-1].id {
						mu.Lock()
						x.dups[r[j].id] = true
						mu.Unlock()
					}
				}
				r = slices.CompactFunc(r, func(a, b slotEntry) bool { return a.id == b.id })
				if cap(r)-len(r) > len(r)/4 {
					r = slices.Clone(r) // grown past its share, or the estimate was high
				}
				x.runs[i] = r
			}
			return nil
		})
	}
	g.Wait()
}

func compareEntries(a, b slotEntry) int { return bytes.Compare(a.id[:], b.id[:]) }

func compareEntryID(e slotEntry, id ID) int { return bytes.Compare(e.id[:], id[:]) }

// blobSet is a set of blobs: a bit for each blob of the index's sorted
// runs (prune marks a million used blobs in 128 KiB, not a 50 MB map),
// a map for the others. It is read and written by one goroutine at a
// time, and the index must get nothing new in bulk meanwhile.
type blobSet struct {
	x     *index
	bits  [][]uint64
	other map[ID]bool
}

func (x *index) newBlobSet() *blobSet {
	s := &blobSet{x: x, bits: make([][]uint64, len(x.runs)), other: map[ID]bool{}}
	for i, r := range x.runs {
		s.bits[i] = make([]uint64, (len(r)+63)/64)
	}
	return s
}

func (s *blobSet) pos(id ID) (int, int, bool) {
	if s.x.runs == nil {
		return 0, 0, false
	}
	b := s.x.run(id)
	i, ok := s.x.search(s.x.runs[b], id)
	return b, i, ok
}

func (s *blobSet) add(id ID) {
	if b, i, ok := s.pos(id); ok {
		s.bits[b][i/64] |= 1 << (i % 64)
		return
	}
	s.other[id] = true
}

func (s *blobSet) has(id ID) bool {
	if b, i, ok := s.pos(id); ok {
		return s.bits[b][i/64]&(1<<(i%64)) != 0
	}
	return s.other[id]
}

// search finds id in run r (sorted). IDs are hashes, spread evenly: the
// bits after the run's own say about where in the run an ID lies (within
// a few dozen entries), so the search starts there and widens by
// doubling steps until it brackets the ID, then halves. A plain binary
// search of a run of thousands took a cache miss at each of its dozen
// steps: a restore of a million files spent 4 s of CPU in it.
func (x *index) search(r []slotEntry, id ID) (int, bool) {
	n := len(r)
	if n == 0 {
		return 0, false
	}
	guess, _ := bits.Mul64(binary.BigEndian.Uint64(id[:8])<<x.runBits, uint64(n))
	g := int(guess) // in [0, n)
	var lo, hi int  // id, if in r, is in r[lo:hi]
	if compareEntryID(r[g], id) <= 0 {
		lo, hi = g, g+1
		for step := 1; hi < n && compareEntryID(r[hi], id) <= 0; step *= 2 {
			lo, hi = hi, hi+step
		}
		hi = min(hi, n)
	} else {
		lo, hi = g-1, g
		for step := 1; lo >= 0 && compareEntryID(r[lo], id) > 0; step *= 2 {
			lo, hi = lo-step, lo
		}
		lo = max(lo, 0)
	}
	i, ok := slices.BinarySearchFunc(r[lo:hi], id, compareEntryID)
	return lo + i, ok
}

// find returns blob id's slot; x.mu is held.
func (x *index) find(id ID) (slot, bool) {
	if s, ok := x.blobs[id]; ok {
		return s, true
	}
	if x.runs == nil {
		return slot{}, false
	}
	r := x.runs[x.run(id)]
	i, ok := x.search(r, id)
	if !ok {
		return slot{}, false
	}
	return r[i].s, true
}

// each calls fn with every blob (one in the runs and the map, twice).
func (x *index) each(fn func(ID, slot)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, s := range x.blobs {
		fn(id, s)
	}
	for _, r := range x.runs {
		for i := range r {
			fn(r[i].id, r[i].s)
		}
	}
}

func (x *index) addPack(sp sealedPack) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.packNumber(sp)
	for _, e := range sp.Entries {
		x.blobs[e.ID] = slot{pack: n, typ: e.Type, compressed: e.Compressed, offset: e.Offset, length: e.Length, raw: e.Raw}
		x.packEnd[n] = max(x.packEnd[n], int64(e.Offset)+int64(e.Length))
	}
}

func (x *index) lookup(id ID) (location, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s, ok := x.find(id)
	if !ok {
		return location{}, false
	}
	return location{Pack: x.packIDs[s.pack], Type: s.typ, Compressed: s.compressed, Offset: s.offset, Length: s.length, Raw: s.raw}, true
}

// has reports whether the blob is indexed.
func (x *index) has(id ID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.find(id)
	return ok
}

// packSize is where the last blob the index knows of pack ends.
func (x *index) packSize(pack ID) int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	if n, ok := x.packNum[pack]; ok {
		return x.packEnd[n]
	}
	return 0
}

// encodeIndex: the table of every pack, compressed, then sealed in an
// encrypted repository.
func encodeIndex(sl *sealer, packs []sealedPack) []byte {
	compact := sl.compact()
	b := []byte(indexMagic)
	if compact {
		b = []byte(indexMagicCompact)
	}
	for _, sp := range packs {
		b = append(b, sp.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(sp.Entries)))
		if compact {
			b = appendCompacts(b, sp.Entries, sl.blobOverhead())
			continue
		}
		for _, e := range sp.Entries {
			b = appendEntry(b, e)
		}
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	z := enc.EncodeAll(b, nil)
	if sl == nil {
		return z
	}
	return sl.seal(make([]byte, 0, len(z)+sealOverhead), z, adIndex)
}

func decodeIndex(sl *sealer, stored []byte) ([]sealedPack, error) {
	z, err := sl.open(nil, stored, adIndex)
	if err != nil {
		return nil, err
	}
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	defer dec.Close()
	b, err := dec.DecodeAll(z, nil)
	if err != nil {
		return nil, err
	}
	compact := sl.compact()
	want := indexMagic
	if compact {
		want = indexMagicCompact
	}
	if !strings.HasPrefix(string(b[:min(len(b), 8)]), want) {
		return nil, errors.New("not an index of this repository version")
	}
	b = b[8:]
	var out []sealedPack
	for len(b) > 0 {
		if len(b) < 36 {
			return nil, errors.New("truncated")
		}
		var sp sealedPack
		copy(sp.ID[:], b)
		n := int(binary.LittleEndian.Uint32(b[32:]))
		b = b[36:]
		if compact {
			if sp.Entries, b, err = readCompacts(b, n, sp.ID, sl.blobOverhead()); err != nil {
				return nil, err
			}
			out = append(out, sp)
			continue
		}
		if len(b) < n*entrySize {
			return nil, errors.New("truncated")
		}
		sp.Entries = make([]blobEntry, n)
		for i := range sp.Entries {
			sp.Entries[i] = readEntry(b[i*entrySize:], sp.ID)
		}
		b = b[n*entrySize:]
		out = append(out, sp)
	}
	return out, nil
}

// writeIndex stores an index object for packs; its name is its hash.
func (r *Repo) writeIndex(ctx context.Context, packs []sealedPack) (string, error) {
	if len(packs) == 0 {
		return "", nil
	}
	b := encodeIndex(r.sealer, packs)
	name := "index/" + hashOf(b).String()
	return name, r.put(ctx, name, b, false)
}

// loadIndex reads every index object, with every pack's table.
func (r *Repo) loadIndex(ctx context.Context) (*index, error) {
	return r.readIndex(ctx, newIndex())
}

// loadLookupIndex reads every index object for lookups only (Create,
// Restore): no pack tables.
func (r *Repo) loadLookupIndex(ctx context.Context) (*index, error) {
	return r.readIndex(ctx, newLookupIndex())
}

func (r *Repo) readIndex(ctx context.Context, x *index) (*index, error) {
	objs, err := r.list(ctx, "index/")
	if err != nil {
		return nil, err
	}
	var size int64
	for _, o := range objs {
		size += o.Size
	}
	perEntry := int64(indexEntryBytes)
	if r.sealer.compact() {
		perEntry = compactEntryBytes
	}
	x.reserve(int(size / perEntry))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Uploads)
	for _, o := range objs {
		g.Go(func() error {
			b, err := r.get(gctx, o.Name)
			if err != nil {
				return err
			}
			packs, err := decodeIndex(r.sealer, b)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", errCorrupt, r.key(o.Name), err)
			}
			for _, sp := range packs {
				x.loadPack(sp)
			}
			x.mu.Lock()
			x.files = append(x.files, o.Name)
			x.mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return x, err
	}
	x.freeze()
	return x, nil
}
