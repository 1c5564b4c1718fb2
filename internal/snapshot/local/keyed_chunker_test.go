package local

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// cutPieces is data cut by r's chunker.
func cutPieces(t *testing.T, r *Repo, data []byte) [][]byte {
	t.Helper()
	c := newCDC(r.rc.Chunker.Min, r.rc.Chunker.Avg, r.rc.Chunker.Max, r.gear)
	c.reset(bytes.NewReader(data))
	var out [][]byte
	for {
		k, err := c.next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(k))
	}
}

// cutLengths is where r's chunker cuts data.
func cutLengths(t *testing.T, r *Repo, data []byte) []int {
	t.Helper()
	var n []int
	for _, k := range cutPieces(t, r, data) {
		n = append(n, len(k))
	}
	return n
}

// A new repository (version 4) cuts files where no other repository does:
// its chunker's table comes from its master key. Create uses it, a
// reopened repository finds the same cuts (an unchanged file adds
// nothing), and a version 3 repository keeps fastcdc-go's cuts.
func TestKeyedChunker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	data := randBytes(rand.New(rand.NewSource(9)), 24<<20)
	var lib []int
	for _, k := range libChunks(t, data, chunkMin, chunkAvg, chunkMax) {
		lib = append(lib, len(k))
	}
	r1, b1 := setup(t)
	r2, _ := setup(t)
	c1, c2 := cutLengths(t, r1, data), cutLengths(t, r2, data)
	if len(lib) < 10 {
		t.Fatalf("setup: %d chunks", len(lib))
	}
	if slices.Equal(c1, c2) || slices.Equal(c1, lib) || slices.Equal(c2, lib) {
		t.Fatalf("two new repositories cut alike, or as fastcdc-go:\n%v\n%v\n%v", c1, c2, lib)
	}

	// On log text, whose bytes are few, a keyed table keeps chunks near
	// the average the parameters ask for (1 MiB), whatever the key.
	text := logText(rand.New(rand.NewSource(10)), 48<<20)
	for i := 0; i < 4; i++ {
		key := bytes.Repeat([]byte{byte(i)}, 32)
		r := &Repo{rc: r1.rc, gear: keyedGear(key)}
		n := cutLengths(t, r, text)
		if avg := len(text) / len(n); avg < 800<<10 || avg > 1400<<10 {
			t.Errorf("key %d: log text cut into chunks of %d bytes on average, want about 1 MiB", i, avg)
		}
	}

	writeFile(t, filepath.Join(b1.src, "f"), data, 0o644, time.Unix(1e9, 0))
	s, err := r1.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := entryOf(t, r1, s, "f").Chunks, fullChunks(t, r1, data); !slices.Equal(got, want) {
		t.Fatalf("create cut the file into %d chunks, not the repository's %d", len(got), len(want))
	}
	again, err := Open(ctx, b1.srv.Client, r1.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cutLengths(t, again, data), c1) {
		t.Fatal("the reopened repository cuts elsewhere")
	}
	// A copy of the file elsewhere in the volume: its chunks are stored.
	writeFile(t, filepath.Join(b1.src, "copy"), data, 0o644, time.Unix(2e9, 0))
	s2, err := again.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.Stats.BytesAdded > 64<<10 {
		t.Fatalf("a copy of a stored file added %d bytes", s2.Stats.BytesAdded)
	}
	restoreAndCompare(t, again, s2.ID, b1.src)

	// Version 3: fastcdc-go's table.
	rc := r2.rc
	rc.Version = versionIDNonce
	if err := r2.delIf(ctx, "config", ""); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(rc)
	if err := r2.put(ctx, "config", body, true); err != nil {
		t.Fatal(err)
	}
	v3, err := Open(ctx, r2.s3, r2.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cutLengths(t, v3, data), lib) {
		t.Fatal("a version 3 repository does not cut as fastcdc-go")
	}
}
