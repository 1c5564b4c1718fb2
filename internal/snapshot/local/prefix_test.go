package local

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// fullChunks is the chunk list of data chunked from its first byte: what
// Create must record however it got there.
func fullChunks(t *testing.T, r *Repo, data []byte) []ID {
	t.Helper()
	if len(data) == 0 {
		return nil
	}
	if len(data) <= r.rc.Chunker.Min {
		return []ID{r.sealer.blobID(data)}
	}
	var ids []ID
	for _, k := range cutPieces(t, r, data) {
		ids = append(ids, r.sealer.blobID(k))
	}
	return ids
}

// entryOf returns the snapshot's tree entry for path.
func entryOf(t *testing.T, r *Repo, s snapshot.Snapshot, path string) entry {
	t.Helper()
	ctx := context.Background()
	x, err := r.loadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := r.loadTree(ctx, x, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tr.Entries {
		if e.Path == path {
			return e
		}
	}
	t.Fatalf("%s is not in snapshot %s", path, s.ID)
	return entry{}
}

// TestKeptPrefix changes a big file in each way the parent's chunk list
// could mislead an incremental snapshot, and checks each time that the
// recorded chunks are those of a full read, that only about the changed
// bytes are stored, and that the snapshot restores byte for byte.
func TestKeptPrefix(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	rng := rand.New(rand.NewSource(11))
	const name = "data/big.bin"
	p := filepath.Join(b.src, name)
	// Random content: compression cannot hide what is stored.
	content := randBytes(rng, 20<<20)
	mt := time.Unix(1e9, 0)
	writeFile(t, p, content, 0o644, mt)
	writeFile(t, filepath.Join(b.src, "other.txt"), []byte("unchanged"), 0o644, mt)
	if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	from := int64(-1) // where the last Create started chunking big.bin
	r.onChunk = func(path string, at int64) {
		if path == name {
			from = at
		}
	}

	steps := []struct {
		name string
		// change returns the new content; it writes the file itself.
		change func() []byte
		// maxAdded bounds the bytes the snapshot may add.
		maxAdded int64
	}{
		{"append", func() []byte {
			add := randBytes(rng, 300<<10)
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(add)
			f.Close()
			return append(append([]byte(nil), content...), add...)
		}, 300<<10 + chunkMax + 64<<10},
		{"mtime only", func() []byte {
			if err := os.Chtimes(p, mt.Add(time.Hour), mt.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			return content
		}, 64 << 10},
		{"middle byte, same size", func() []byte {
			c := append([]byte(nil), content...)
			c[len(c)/2] ^= 0xff
			writeFile(t, p, c, 0o644, mt.Add(2*time.Hour))
			return c
		}, 2*chunkMax + 64<<10},
		{"middle bytes removed", func() []byte {
			c := append(append([]byte(nil), content[:len(content)/3]...), content[len(content)/3+1000:]...)
			writeFile(t, p, c, 0o644, mt.Add(3*time.Hour))
			return c
		}, 2*chunkMax + 64<<10},
		{"truncated mid-chunk", func() []byte {
			c := content[:len(content)*2/3+12345]
			if err := os.Truncate(p, int64(len(c))); err != nil {
				t.Fatal(err)
			}
			os.Chtimes(p, mt.Add(4*time.Hour), mt.Add(4*time.Hour))
			return c
		}, chunkMax + 64<<10},
		{"first byte changed", func() []byte {
			c := append([]byte(nil), content...)
			c[0] ^= 1
			writeFile(t, p, c, 0o644, mt.Add(5*time.Hour))
			return c
		}, chunkMax + 64<<10},
		{"replaced: new inode, same size and mtime, other content", func() []byte {
			c := append([]byte(nil), content...)
			copy(c[len(c)/2:], randBytes(rng, 100<<10))
			tmp := p + ".new"
			writeFile(t, tmp, c, 0o644, time.Unix(0, entryOf(t, r, mustLatest(t, r), name).MTime))
			if err := os.Rename(tmp, p); err != nil {
				t.Fatal(err)
			}
			return c
		}, 2*chunkMax + 64<<10},
		{"rewritten", func() []byte {
			c := randBytes(rng, 5<<20)
			writeFile(t, p, c, 0o644, mt.Add(6*time.Hour))
			return c
		}, 5<<20 + 64<<10},
	}
	for _, st := range steps {
		prevLen := len(content)
		content = st.change()
		from = -1
		s, err := r.Create(ctx, snapshot.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if s.Stats.FilesRead != 1 {
			t.Errorf("%s: files read = %d, want 1", st.name, s.Stats.FilesRead)
		}
		if s.Stats.BytesAdded > st.maxAdded {
			t.Errorf("%s: added %d bytes, want at most %d", st.name, s.Stats.BytesAdded, st.maxAdded)
		}
		e := entryOf(t, r, s, name)
		if e.Size != int64(len(content)) {
			t.Errorf("%s: size %d, want %d", st.name, e.Size, len(content))
		}
		if diff := cmp.Diff(fullChunks(t, r, content), e.Chunks); diff != "" {
			t.Errorf("%s: chunks differ from a full read (-full +recorded):\n%s", st.name, diff)
		}
		// How far the parent's chunks were kept, by what changed.
		switch st.name {
		case "append":
			if from <= 0 || from >= int64(prevLen) || int64(prevLen)-from > chunkMax {
				t.Errorf("append: chunked from %d; want within the old last chunk (file was %d)", from, prevLen)
			}
		case "mtime only":
			if from != -1 {
				t.Errorf("mtime only: chunked from %d; want no chunking", from)
			}
		case "middle byte, same size", "middle bytes removed":
			if from <= 0 || from > int64(len(content)/3+1000) && st.name == "middle bytes removed" || from > int64(len(content)/2) {
				t.Errorf("%s: chunked from %d; want from the chunk that changed", st.name, from)
			}
		case "truncated mid-chunk":
			if from <= int64(len(content))-chunkMax || from > int64(len(content)) {
				t.Errorf("truncated: chunked from %d; want from the last whole old chunk (size %d)", from, len(content))
			}
		case "first byte changed", "rewritten":
			if from != 0 {
				t.Errorf("%s: chunked from %d; want 0", st.name, from)
			}
		}
		t.Logf("%s: %d chunks, chunked from %d, added %d bytes", st.name, len(e.Chunks), from, s.Stats.BytesAdded)
		restoreAndCompare(t, r, s.ID, b.src)
	}
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
}

func mustLatest(t *testing.T, r *Repo) snapshot.Snapshot {
	t.Helper()
	s, err := r.Find(context.Background(), "latest")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRestoreModes: modes with special bits, read-only files and
// directories, and files of many chunks come back with mode and mtime,
// through the descriptor-based path.
func TestRestoreModes(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	rng := rand.New(rand.NewSource(12))
	mt := time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC)
	writeFile(t, filepath.Join(b.src, "ro", "readonly.bin"), randBytes(rng, 6<<20), 0o444, mt)
	writeFile(t, filepath.Join(b.src, "ro", "small-ro.txt"), []byte("read only"), 0o400, mt.Add(time.Second))
	writeFile(t, filepath.Join(b.src, "setgid.sh"), []byte("#!/bin/sh\n"), 0o755|os.ModeSetgid, mt)
	writeFile(t, filepath.Join(b.src, "empty"), nil, 0o640, mt.Add(time.Minute))
	dup := randBytes(rng, 1<<20)
	writeFile(t, filepath.Join(b.src, "twice.bin"), append(append([]byte(nil), dup...), dup...), 0o600, mt)
	if err := os.Chmod(filepath.Join(b.src, "ro"), 0o555); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(b.src, "ro"), mt, mt)
	t.Cleanup(func() { os.Chmod(filepath.Join(b.src, "ro"), 0o755) })
	s, err := r.Create(context.Background(), snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s.ID, b.src)
}

// TestRestoreFewOpenFiles: with at most one file kept open, files of many
// chunks spread over packs are closed and opened again between chunks.
func TestRestoreFewOpenFiles(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	r.maxOpen = 1
	r.cfg.Uploads = 4
	rng := rand.New(rand.NewSource(13))
	for i := 0; i < 6; i++ {
		writeFile(t, filepath.Join(b.src, "f"+string(rune('a'+i))), randBytes(rng, 3<<20+i*1000), 0o640, time.Unix(1e9+int64(i), 7))
	}
	s, err := r.Create(context.Background(), snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s.ID, b.src)
}

// TestCodecFrames: a compressible blob larger than the sample is stored as
// two frames, and opens to its plaintext.
func TestCodecFrames(t *testing.T) {
	rng := rand.New(rand.NewSource(14))
	for _, n := range []int{4096, 4 * sampleSize, 4*sampleSize + 1, 1 << 20, 3<<20 + 17} {
		data := logText(rng, n)
		sl, _ := newSealer(newMasterKey())
		sl3, _ := newSealer(newMasterKey())
		sl3.idNonce = true
		for _, r := range []*Repo{{}, {sealer: sl}, {sealer: sl3}} {
			cd := r.newCodec()
			stored, z := cd.store(r.sealer.blobID(data), data)
			if !z || len(stored) > n/2 {
				t.Fatalf("%d bytes of text: compressed %v to %d", n, z, len(stored))
			}
			e := blobEntry{ID: r.sealer.blobID(data), location: location{Compressed: true, Raw: uint32(n)}}
			for _, open := range []func(blobEntry, []byte) ([]byte, error){cd.open, cd.openInto} {
				got, err := open(e, stored)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%d bytes, encrypted %v: open: %v, equal %v", n, r.sealer != nil, err, bytes.Equal(got, data))
				}
			}
		}
	}
}
