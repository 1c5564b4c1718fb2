package local

import (
	"errors"
	"math/rand"
	"testing"
)

// Compact entries read back as written: blobs that follow one another,
// with gaps, out of order, compressed, raw, and raw with a plaintext
// length that is not the stored one less the tag.
func TestCompactEntriesRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	pack := ID{7}
	var entries []blobEntry
	var off uint32
	for i := 0; i < 500; i++ {
		var e blobEntry
		rng.Read(e.ID[:])
		e.Pack, e.Type = pack, byte(i%2)
		e.Length = uint32(17 + rng.Intn(1<<uint(4+rng.Intn(20))))
		switch i % 5 {
		case 0, 1:
			e.Compressed, e.Raw = true, e.Length*3
		case 2:
			e.Raw = e.Length - 7 // not what a seal adds: written out
		default:
			e.Raw = e.Length - 16
		}
		switch i % 11 {
		case 3:
			off += uint32(rng.Intn(5000)) // a gap
		case 4:
			off -= min(off, 900) // before the previous entry's end
		}
		e.Offset = off
		off += e.Length
		entries = append(entries, e)
	}
	entries = append(entries, blobEntry{location: location{Pack: pack, Offset: 1<<32 - 40, Length: 39, Raw: 23}})
	b := appendCompacts([]byte("head"), entries, 16)
	b = append(b, "tail"...)
	if per := float64(len(b)-8) / float64(len(entries)); per > 40 {
		t.Errorf("%.1f bytes an entry", per)
	}
	got, rest, err := readCompacts(b[4:], len(entries), pack, 16)
	if err != nil || string(rest) != "tail" {
		t.Fatalf("read: %v, rest %q", err, rest)
	}
	for i := range entries {
		if got[i] != entries[i] {
			t.Fatalf("entry %d: %+v, want %+v", i, got[i], entries[i])
		}
	}
	all, _, err := readCompacts(b[4:len(b)-4], -1, pack, 16)
	if err != nil || len(all) != len(entries) {
		t.Fatalf("read to the end: %d entries, %v", len(all), err)
	}
}

// A cut or mangled table is an error, never a panic or a wrong entry
// past the pack's 4 GiB.
func TestCompactEntriesMalformed(t *testing.T) {
	entries := []blobEntry{
		{ID: ID{1}, location: location{Compressed: true, Offset: 0, Length: 300, Raw: 900}},
		{ID: ID{2}, location: location{Offset: 300, Length: 200000, Raw: 200000 - 16}},
	}
	b := appendCompacts(nil, entries, 16)
	for n := 0; n < len(b); n++ {
		if got, _, err := readCompacts(b[:n], 2, ID{}, 16); !errors.Is(err, errBadEntry) {
			t.Fatalf("cut at %d of %d: %v, %d entries", n, len(b), err, len(got))
		}
	}
	if _, _, err := readCompacts(b, 3, ID{}, 16); !errors.Is(err, errBadEntry) {
		t.Fatalf("one entry more than the table holds: %v", err)
	}
	if _, _, err := readCompacts(b, 1<<30, ID{}, 16); !errors.Is(err, errBadEntry) {
		t.Fatalf("a count the table cannot hold: %v", err)
	}
	// A raw entry shorter than the tag, and one past 4 GiB.
	short := appendCompact(nil, blobEntry{location: location{Length: 5, Raw: 0}}, 0, 5)
	if _, _, err := readCompacts(short, 1, ID{}, 16); !errors.Is(err, errBadEntry) {
		t.Fatalf("a stored length under the tag's: %v", err)
	}
	far := appendCompact(nil, blobEntry{location: location{Offset: 1<<32 - 10, Length: 20, Raw: 4}}, 0, 16)
	if _, _, err := readCompacts(far, 1, ID{}, 16); !errors.Is(err, errBadEntry) {
		t.Fatalf("an entry past 4 GiB: %v", err)
	}
}
