package local

import (
	"context"
	"fmt"
	"math/rand"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Create writes index objects as its packs fill, not only at its end: a
// create cut short before its snapshot object leaves what it stored
// indexed, the next create stores it no second time, and prune removes
// what no snapshot came to use.
func TestCreateIndexesAsItGoes(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	ctx := context.Background()
	r, fl := openFast(t, b, time.Minute, 10*time.Second)
	r.indexEvery = 10
	rng := rand.New(rand.NewSource(3))
	const files, size = 48, 64 << 10 // 3 MiB, incompressible: 3 packs of 1 MiB or more
	for i := 0; i < files; i++ {
		writeFile(t, filepath.Join(b.src, fmt.Sprintf("d%d/f%02d", i%4, i)), randBytes(rng, size), 0o644, time.Unix(1e9, 0))
	}
	// Cut short after two packs: the end of the create (its last pack,
	// its last index object, its snapshot) never comes.
	var packs atomic.Int32
	fail := func(req *http.Request) bool {
		return req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/"+r.key("packs/")) && packs.Add(1) > 2
	}
	fl.fail.Store(&fail)
	if _, err := r.Create(ctx, snapshot.CreateOptions{}); err == nil {
		t.Fatal("a create whose third pack cannot be written succeeded")
	}
	if n := len(objectNames(t, r, "index/")); n < 1 {
		t.Fatalf("no index object after a create cut short after two packs, with an index every 10 blobs")
	}
	fl.fail.Store(nil)
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Stats.FilesRead != files || s.Stats.BytesAdded > files*size/2 {
		t.Fatalf("second create read %d files and added %d bytes; want every file read and at most half of %d bytes added (what the cut create stored is indexed)", s.Stats.FilesRead, s.Stats.BytesAdded, files*size)
	}
	restoreAndCompare(t, r, s.ID, b.src)
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s.ID, b.src)
}
