package local

import (
	"encoding/json"
	"math"
	"math/rand"
	"reflect"
	"testing"
)

// decodeTree reads what encoding/json reads, on the trees Create writes
// (through the fast parser) and on everything else (through
// encoding/json): random entries with every field, names with quotes,
// backslashes, control characters, non-ASCII and invalid UTF-8, extreme
// numbers, and corrupted blobs.
func TestDecodeTreeMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	names := []string{"a", "file.txt", `quo"te`, `back\slash`, "tab\there", "ünïcödé", "日本語", "\xff\xfeinvalid", "<html>&amp;", "\u2028", "-", "0"}
	types := []string{typeFile, typeDir, typeSymlink, typeHardlink, typeFIFO, typeChar, typeBlock, "z"}
	randID := func() ID {
		var id ID
		rng.Read(id[:])
		return id
	}
	fast := 0
	for round := 0; round < 2000; round++ {
		var tr tree
		tr.Version = rng.Intn(5)
		for i, n := 0, rng.Intn(6); i < n; i++ {
			e := entry{Path: names[rng.Intn(len(names))], Type: types[rng.Intn(len(types))], Mode: rng.Uint32(), MTime: rng.Int63() - rng.Int63()}
			if rng.Intn(2) == 0 {
				e.Size, e.Inode, e.UID, e.GID, e.Rdev = rng.Int63(), rng.Uint64(), rng.Uint32(), rng.Uint32(), rng.Uint64()
			}
			switch rng.Intn(6) {
			case 0:
				e.MTime = math.MinInt64
			case 1:
				e.MTime, e.Inode, e.Size = math.MaxInt64, math.MaxUint64, math.MaxInt64
			}
			if rng.Intn(3) == 0 {
				e.Target = names[rng.Intn(len(names))]
			}
			for j, m := 0, rng.Intn(4); j < m; j++ {
				e.Chunks = append(e.Chunks, randID())
			}
			if rng.Intn(3) == 0 {
				id := randID()
				e.Sub = &id
			}
			e.Sparse = rng.Intn(4) == 0
			if rng.Intn(8) == 0 {
				e.Xattrs = map[string][]byte{"user.k": []byte("v")}
			}
			tr.Entries = append(tr.Entries, e)
		}
		b, err := json.Marshal(tr)
		if err != nil {
			t.Fatal(err)
		}
		inputs := [][]byte{b}
		// And damaged copies: a byte changed, cut short.
		if len(b) > 2 {
			d := append([]byte(nil), b...)
			d[rng.Intn(len(d))] = byte(rng.Intn(256))
			inputs = append(inputs, d, b[:rng.Intn(len(b))])
		}
		for k, in := range inputs {
			var want, got tree
			werr := json.Unmarshal(in, &want)
			gerr := decodeTree(in, &got)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("%q: encoding/json error %v, decodeTree error %v", in, werr, gerr)
			}
			if werr != nil {
				continue
			}
			if len(want.Entries) == 0 && len(got.Entries) == 0 {
				want.Entries, got.Entries = nil, nil
			}
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("%q:\nencoding/json %+v\ndecodeTree    %+v", in, want, got)
			}
			if k == 0 {
				var f tree
				if decodeTreeFast(in, &f) {
					fast++
				}
			}
		}
	}
	// The point of it: most trees Create writes take the fast path.
	if fast < 500 {
		t.Fatalf("only %d of 2000 marshaled trees took the fast path", fast)
	}
}

// A tree of the kind Create writes takes the fast path.
func TestDecodeTreeFastOnCreatedTrees(t *testing.T) {
	id := ID{1, 2, 3}
	tr := tree{Version: 3, Entries: []entry{
		{Path: "dir", Type: typeDir, Mode: 0o755, MTime: 1e18, UID: 1000, GID: 1000, Sub: &id},
		{Path: "f.txt", Type: typeFile, Mode: 0o644, MTime: 1e18, Size: 12, Inode: 42, Chunks: []ID{id, id}},
		{Path: "l", Type: typeSymlink, Mode: 0o777, MTime: -5, Target: "f.txt"},
		{Path: "empty", Type: typeFile, Mode: 0o600},
	}}
	b, _ := json.Marshal(tr)
	var got tree
	if !decodeTreeFast(b, &got) {
		t.Fatalf("%s did not take the fast path", b)
	}
	if !reflect.DeepEqual(tr, got) {
		t.Fatalf("decoded %+v, want %+v", got, tr)
	}
}
