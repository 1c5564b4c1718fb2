package local

import (
	"context"
	"errors"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// A dry run reports what prune would do, and does nothing.
func TestPruneDryRun(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	rng := rand.New(rand.NewSource(3))
	for i := 0; i < 3; i++ {
		writeFile(t, filepath.Join(b.src, "data.bin"), randBytes(rng, 2<<20), 0o644, time.Unix(int64(1e9+i), 0))
		if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	packs, _ := r.list(ctx, "packs/")
	dry, err := r.PruneWith(ctx, snapshot.Policy{KeepLast: 1}, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Removed) != 2 || dry.PacksDeleted == 0 || dry.BytesFreed < 3<<20 {
		t.Fatalf("dry run: %+v", dry)
	}
	if after, _ := r.list(ctx, "packs/"); len(after) != len(packs) {
		t.Fatalf("a dry run deleted packs: %d -> %d", len(packs), len(after))
	}
	if list, _ := r.List(ctx); len(list) != 3 {
		t.Fatalf("a dry run removed snapshots: %d left", len(list))
	}
	real, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1})
	if err != nil {
		t.Fatal(err)
	}
	if real.PacksDeleted != dry.PacksDeleted || real.PacksRepacked != dry.PacksRepacked || real.BytesFreed < dry.BytesFreed*9/10 {
		t.Fatalf("prune %+v differs from its dry run %+v", real, dry)
	}
}

// --read-data-subset n/m: m runs read every pack once; a damaged pack is
// found by exactly the run whose group holds it.
func TestVerifySubset(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	makeTree(t, b.src, 100, 6<<20)
	if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	full, err := r.Verify(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The victim holds data only: a pack with a tree blob would fail
	// every run, which reads the tree first.
	x, err := r.loadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for p, es := range x.packs {
		trees := false
		for _, e := range es {
			trees = trees || e.Type == blobTree
		}
		if !trees && (victim == "" || "packs/"+p.String() > victim) {
			victim = "packs/" + p.String()
		}
	}
	if victim == "" {
		t.Fatal("no pack holds data only")
	}
	flipByte(t, b, r.key(victim), 5)
	const m = 3
	read, found := 0, 0
	for n := 1; n <= m; n++ {
		rep, err := r.VerifyWith(ctx, "", VerifyOptions{Subset: strings.Join([]string{string(rune('0' + n)), "3"}, "/")})
		if err != nil && !errors.Is(err, snapshot.ErrCorrupt) {
			t.Fatal(err)
		}
		if err != nil && strings.Contains(err.Error(), victim) {
			found++
		}
		if rep.Packs+rep.PacksNotRead != full.Packs {
			t.Errorf("%d/3: %d read + %d not read != %d", n, rep.Packs, rep.PacksNotRead, full.Packs)
		}
		read += rep.Packs
	}
	if read != full.Packs || found != 1 {
		t.Fatalf("3 runs read %d packs (want %d) and found the damaged one %d times (want 1)", read, full.Packs, found)
	}
	rep, _ := r.VerifyWith(ctx, "", VerifyOptions{Subset: "50%"})
	if want := (full.Packs + 1) / 2; rep.Packs != want {
		t.Errorf("50%% read %d of %d packs, want %d", rep.Packs, full.Packs, want)
	}
	for _, bad := range []string{"0/3", "4/3", "x", "0", "150%", "1/0"} {
		if _, err := r.VerifyWith(ctx, "", VerifyOptions{Subset: bad}); err == nil || errors.Is(err, snapshot.ErrCorrupt) {
			t.Errorf("subset %q: %v, want a usage error", bad, err)
		}
	}
}
