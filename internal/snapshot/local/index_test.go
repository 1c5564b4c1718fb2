package local

import (
	"math/rand"
	"runtime"
	"slices"
	"testing"
	"time"
)

// The sorted runs find every blob loaded, whatever the reserve guessed
// (none, too few, too many), a blob in two packs once (and name it a
// duplicate), nothing else; what is added afterwards a pack at a time is
// found too. A set of blobs over the runs holds what was added to it.
func TestIndexRuns(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	randID := func() ID {
		var id ID
		rng.Read(id[:])
		return id
	}
	for _, reserve := range []int{0, 100, 20000, 1 << 20} {
		x := newLookupIndex()
		x.reserve(reserve)
		want := map[ID]blobEntry{}
		in := map[ID]map[ID]bool{} // blob -> the packs it is in
		var packs []sealedPack
		for p := range 40 {
			sp := sealedPack{ID: randID()}
			for i := range 500 {
				e := blobEntry{ID: randID(), location: location{Pack: sp.ID, Type: blobData, Offset: uint32(i * 100), Length: 100, Raw: uint32(p)}}
				if p > 0 && i%50 == 0 { // also in an earlier pack
					prev := packs[p-1].Entries[i]
					e.ID = prev.ID
				}
				sp.Entries = append(sp.Entries, e)
				if in[e.ID] == nil {
					in[e.ID] = map[ID]bool{}
				}
				in[e.ID][sp.ID] = true
				if _, dup := want[e.ID]; !dup {
					want[e.ID] = e
				}
			}
			packs = append(packs, sp)
			x.loadPack(sp)
		}
		x.freeze()
		n := 0
		x.each(func(ID, slot) { n++ })
		if n != len(want) {
			t.Errorf("reserve %d: %d blobs, want %d (each once)", reserve, n, len(want))
		}
		for id, e := range want {
			loc, ok := x.lookup(id)
			if !ok {
				t.Fatalf("reserve %d: blob %s not found", reserve, id)
			}
			if loc.Length != 100 || loc.Offset != e.Offset {
				t.Fatalf("reserve %d: blob %s at %+v, want offset %d", reserve, id, loc, e.Offset)
			}
			if !in[id][loc.Pack] {
				t.Fatalf("reserve %d: blob %s in pack %s, which does not hold it", reserve, id, loc.Pack)
			}
		}
		for range 1000 {
			if id := randID(); x.has(id) {
				t.Fatalf("reserve %d: %s found, never added", reserve, id)
			}
		}
		for id, ps := range in {
			if x.dups[id] != (len(ps) > 1) {
				t.Fatalf("reserve %d: blob %s in %d packs, dups says %v", reserve, id, len(ps), x.dups[id])
			}
		}
		// A set of blobs: half of those loaded, and some never loaded.
		set := x.newBlobSet()
		members := map[ID]bool{}
		i := 0
		for id := range want {
			if i++; i%2 == 0 {
				set.add(id)
				members[id] = true
			}
		}
		for range 100 {
			id := randID()
			set.add(id)
			members[id] = true
		}
		for id := range want {
			if set.has(id) != members[id] {
				t.Fatalf("reserve %d: set has %s: %v, want %v", reserve, id, set.has(id), members[id])
			}
		}
		for id := range members {
			if !set.has(id) {
				t.Fatalf("reserve %d: set lost %s", reserve, id)
			}
		}
		late := sealedPack{ID: randID(), Entries: []blobEntry{{ID: randID(), location: location{Length: 7}}}}
		x.addPack(late)
		if loc, ok := x.lookup(late.Entries[0].ID); !ok || loc.Pack != late.ID || loc.Length != 7 {
			t.Errorf("reserve %d: a blob added after the load: %+v, %v", reserve, loc, ok)
		}
	}
}

// A large index's runs are mapped outside the heap, and unmapped once
// the index is unreachable.
func TestIndexRunsOffHeapReleased(t *testing.T) {
	x := newLookupIndex()
	x.reserve(1 << 20)
	if x.unmapped == nil {
		t.Fatal("a million entries' runs are on the heap")
	}
	small := newLookupIndex()
	small.reserve(1000)
	if small.unmapped != nil {
		t.Error("a thousand entries' runs are mapped")
	}
	var id ID
	id[0] = 0xff
	x.loadPack(sealedPack{ID: ID{1}, Entries: []blobEntry{{ID: id, location: location{Length: 9}}}})
	x.freeze()
	if loc, ok := x.lookup(id); !ok || loc.Length != 9 {
		t.Fatalf("lookup in mapped runs: %+v, %v", loc, ok)
	}
	gone := x.unmapped
	if gone.Load() {
		t.Fatal("unmapped while in use")
	}
	x = nil
	for deadline := time.Now().Add(30 * time.Second); !gone.Load(); {
		if time.Now().After(deadline) {
			t.Fatalf("the mapping of an unreachable index is still there after 30 s of collections")
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// The search from an ID's expected place finds what a binary search
// finds, in runs of every length, for IDs in them and not, at the ends
// and in between (uneven runs included: the guess may be far off).
func TestIndexSearch(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	for _, bitsN := range []uint{4, 9} {
		for _, n := range []int{0, 1, 2, 3, 10, 100, 3000} {
			x := &index{runBits: bitsN}
			r := make([]slotEntry, n)
			for i := range r {
				rng.Read(r[i].id[:])
				if i%3 == 0 { // uneven: a third crowd at the low end
					r[i].id[0], r[i].id[1] = 0, 0
				}
			}
			slices.SortFunc(r, compareEntries)
			r = slices.CompactFunc(r, func(a, b slotEntry) bool { return a.id == b.id })
			probe := func(id ID) {
				want, wok := slices.BinarySearchFunc(r, id, compareEntryID)
				got, ok := x.search(r, id)
				if ok != wok || (ok && got != want) {
					t.Fatalf("bits %d, %d entries: search %s = %d, %v; binary search %d, %v", bitsN, n, id, got, ok, want, wok)
				}
			}
			for _, e := range r {
				probe(e.id)
			}
			for range 2000 {
				var id ID
				rng.Read(id[:])
				probe(id)
			}
			probe(ID{})
			var top ID
			for i := range top {
				top[i] = 0xff
			}
			probe(top)
		}
	}
}
