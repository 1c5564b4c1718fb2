package local

import (
	"encoding/binary"
	"errors"
)

// Compact table entries (repository version 3): a pack's table and an
// index object list a pack's blobs as
//
//	kind     1 byte: the blob type, 0x80 when it is compressed, 0x40
//	         when raw follows
//	id       32 bytes
//	gap      signed varint: offset less the end of the previous entry
//	         (0 when blobs follow one another, as a packer writes them)
//	length   uvarint: stored bytes
//	raw      uvarint, with 0x40 only: plaintext bytes (without it, the
//	         stored length less the seal's tag, as for every blob stored
//	         uncompressed)
//
// About 38 bytes for a small compressed blob and 36 for a raw one, where
// the fixed entries of versions 1 and 2 take 46 (restic's take 37 and
// 41).
const (
	compactZstd = 0x80
	compactRaw  = 0x40
	compactMin  = 1 + 32 + 1 + 1 // the smallest entry
)

// appendCompact appends e's compact entry; prevEnd is where the previous
// entry of its pack ended (0 for the first), overhead what sealing adds
// to a blob.
func appendCompact(b []byte, e blobEntry, prevEnd uint32, overhead int) []byte {
	kind := e.Type
	if e.Compressed {
		kind |= compactZstd
	}
	explicit := e.Compressed || int64(e.Length)-int64(overhead) != int64(e.Raw)
	if explicit {
		kind |= compactRaw
	}
	b = append(b, kind)
	b = append(b, e.ID[:]...)
	b = binary.AppendVarint(b, int64(e.Offset)-int64(prevEnd))
	b = binary.AppendUvarint(b, uint64(e.Length))
	if explicit {
		b = binary.AppendUvarint(b, uint64(e.Raw))
	}
	return b
}

// appendCompacts appends the compact entries of a pack's blobs.
func appendCompacts(b []byte, entries []blobEntry, overhead int) []byte {
	var end uint32
	for _, e := range entries {
		b = appendCompact(b, e, end, overhead)
		end = e.Offset + e.Length
	}
	return b
}

var errBadEntry = errors.New("a table entry is malformed")

// readCompacts reads n compact entries of pack (n < 0: until b ends) and
// returns them with what of b follows them.
func readCompacts(b []byte, n int, pack ID, overhead int) ([]blobEntry, []byte, error) {
	var out []blobEntry
	if n >= 0 {
		if n > len(b)/compactMin {
			return nil, nil, errBadEntry
		}
		out = make([]blobEntry, 0, n)
	}
	var end int64
	for n < 0 && len(b) > 0 || len(out) < n {
		if len(b) < compactMin {
			return nil, nil, errBadEntry
		}
		kind := b[0]
		e := blobEntry{location: location{Pack: pack, Type: kind &^ (compactZstd | compactRaw), Compressed: kind&compactZstd != 0}}
		copy(e.ID[:], b[1:33])
		b = b[33:]
		gap, k := binary.Varint(b)
		if k <= 0 {
			return nil, nil, errBadEntry
		}
		b = b[k:]
		length, k := binary.Uvarint(b)
		if k <= 0 || length > 1<<32-1 {
			return nil, nil, errBadEntry
		}
		b = b[k:]
		raw := int64(length) - int64(overhead)
		if kind&compactRaw != 0 {
			r, k := binary.Uvarint(b)
			if k <= 0 || r > 1<<32-1 {
				return nil, nil, errBadEntry
			}
			b, raw = b[k:], int64(r)
		}
		off := end + gap
		if raw < 0 || off < 0 || off+int64(length) > 1<<32-1 {
			return nil, nil, errBadEntry
		}
		e.Offset, e.Length, e.Raw = uint32(off), uint32(length), uint32(raw)
		end = off + int64(length)
		out = append(out, e)
	}
	return out, b, nil
}
