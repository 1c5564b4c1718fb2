package local

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
)

const indexMagic = "CVYIDX01"

// index maps every blob to a location. Built from the index objects.
//
// A repository of a million small files has about as many blobs: each is
// held as a 20-byte slot naming its pack by number, not as a location
// with the pack's 32-byte ID, and each pack's table (what prune, verify
// and repair walk) is kept only when asked for (loadIndex's full).
type index struct {
	mu      sync.Mutex
	blobs   map[ID]slot
	packIDs []ID    // pack number -> ID
	packEnd []int64 // pack number -> end of its last blob known
	packNum map[ID]uint32
	files   []string           // index object names read
	packs   map[ID][]blobEntry // pack -> its blobs; nil when not kept
}

// slot is a blob's location with its pack by number.
type slot struct {
	pack                uint32
	typ                 byte
	compressed          bool
	offset, length, raw uint32
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

func (x *index) addPack(sp sealedPack) {
	x.mu.Lock()
	defer x.mu.Unlock()
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
	for _, e := range sp.Entries {
		x.blobs[e.ID] = slot{pack: n, typ: e.Type, compressed: e.Compressed, offset: e.Offset, length: e.Length, raw: e.Raw}
		x.packEnd[n] = max(x.packEnd[n], int64(e.Offset)+int64(e.Length))
	}
}

func (x *index) lookup(id ID) (location, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s, ok := x.blobs[id]
	if !ok {
		return location{}, false
	}
	return location{Pack: x.packIDs[s.pack], Type: s.typ, Compressed: s.compressed, Offset: s.offset, Length: s.length, Raw: s.raw}, true
}

// has reports whether the blob is indexed.
func (x *index) has(id ID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.blobs[id]
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
	b := []byte(indexMagic)
	for _, sp := range packs {
		b = append(b, sp.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(sp.Entries)))
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
	if !strings.HasPrefix(string(b[:min(len(b), 8)]), indexMagic) {
		return nil, errors.New("not an index")
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
				x.addPack(sp)
			}
			x.mu.Lock()
			x.files = append(x.files, o.Name)
			x.mu.Unlock()
			return nil
		})
	}
	return x, g.Wait()
}
