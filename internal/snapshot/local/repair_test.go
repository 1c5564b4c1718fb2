package local

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// The index object is lost: prune refuses to take the packs for garbage,
// repair rebuilds the index from them, and verify then passes.
func TestIndexLostPruneRefusesRepairRebuilds(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	makeTree(t, b.src, 30, 2<<20)
	if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.src, "later.bin"), randBytes(rand.New(rand.NewSource(9)), 1<<20), 0o644, time.Unix(1e9, 0))
	s2, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := r.list(ctx, "index/")
	for _, o := range idx {
		if err := r.del(ctx, o.Name); err != nil {
			t.Fatal(err)
		}
	}
	packs, _ := r.list(ctx, "packs/")
	r.cfg.PruneMargin = -time.Hour // the margin would not save them
	_, err = r.Prune(ctx, snapshot.Policy{KeepLast: 1})
	if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), "snapshot repair") {
		t.Fatalf("prune without an index: %v; want ErrCorrupt pointing at repair", err)
	}
	if after, _ := r.list(ctx, "packs/"); len(after) != len(packs) {
		t.Fatalf("prune deleted packs: %d -> %d", len(packs), len(after))
	}
	if list, _ := r.List(ctx); len(list) != 2 {
		t.Fatalf("prune removed snapshots: %d left", len(list))
	}
	rep, err := r.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lost() || rep.Packs != len(packs) || len(rep.DamagedPacks) != 0 {
		t.Fatalf("repair: %+v; want every pack indexed, nothing lost\n%s", rep, rep)
	}
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s2.ID, b.src)
}

// filesIn returns the files of the snapshot with a chunk in pack.
func filesIn(t *testing.T, r *Repo, s snapshot.Snapshot, pack ID) []string {
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
	var out []string
	for _, e := range tr.Entries {
		for _, c := range e.Chunks {
			if loc, _ := x.lookup(c); loc.Pack == pack {
				out = append(out, e.Path)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// A damaged pack: repair keeps what can be read of it and names exactly
// the files that lost data.
func TestRepairNamesLostFiles(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	makeTree(t, b.src, 30, 3<<20)
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := r.loadIndex(ctx)
	var victim ID
	var first blobEntry
	// A data blob of a pack that also serves other files.
	tr, _ := r.loadTree(ctx, x, s)
	filesOf := func(id ID) []string {
		var out []string
		for _, e := range tr.Entries {
			if slices.Contains(e.Chunks, id) {
				out = append(out, e.Path)
			}
		}
		sort.Strings(out)
		return out
	}
	var want []string
	for p, es := range x.packs {
		for _, e := range es {
			if e.Type == blobData && first.Length == 0 {
				if w := filesOf(e.ID); len(filesIn(t, r, s, p)) > len(w) {
					victim, first, want = p, e, w
				}
			}
		}
	}
	if first.Length == 0 {
		t.Fatal("no pack serves two files")
	}
	// Damage one data blob only: the others are salvaged.
	flipByte(t, b, r.key("packs/"+victim.String()), int(first.Offset))
	if all := filesIn(t, r, s, victim); len(all) <= len(want) {
		t.Fatalf("the pack serves %v; want more files than the damaged blob's %v", all, want)
	}
	rep, err := r.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", rep)
	if got := rep.Incomplete[s.ID]; !slices.Equal(got, want) || rep.LostBlobs != 1 || rep.Salvaged == 0 || len(rep.DamagedPacks) != 1 {
		t.Fatalf("repair: incomplete %v, lost %d, salvaged %d, damaged %v; want %v, 1 lost, some salvaged", got, rep.LostBlobs, rep.Salvaged, rep.DamagedPacks, want)
	}
	if !strings.Contains(rep.String(), want[0]) {
		t.Fatalf("the report does not name %s:\n%s", want[0], rep)
	}
	// The snapshot says what it lacks; deleted, the repository is clean.
	if _, err := r.Verify(ctx, "", nil); !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), want[0]) {
		t.Fatalf("verify: %v; want it to name %s", err, want[0])
	}
	if err := r.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
}

// A damaged pack that no kept snapshot needs does not stop prune: it is
// deleted with the rest.
func TestPruneDeletesDamagedUnneededPack(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	writeFile(t, filepath.Join(b.src, "keep.txt"), []byte("kept"), 0o644, time.Unix(1e9, 0))
	gone := filepath.Join(b.src, "gone.bin")
	writeFile(t, gone, randBytes(rand.New(rand.NewSource(4)), 4<<20), 0o644, time.Unix(1e9, 0))
	s1, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := r.loadIndex(ctx)
	tr, _ := r.loadTree(ctx, x, s1)
	goneChunks := map[ID]bool{}
	for _, e := range tr.Entries {
		if e.Path == "gone.bin" {
			for _, c := range e.Chunks {
				goneChunks[c] = true
			}
		}
	}
	var victim ID
	found := false
	for p, es := range x.packs {
		only := true
		for _, e := range es {
			only = only && goneChunks[e.ID]
		}
		if only {
			victim, found = p, true
			break
		}
	}
	if !found {
		t.Fatal("no pack holds only gone.bin")
	}
	flipByte(t, b, r.key("packs/"+victim.String()), 10)
	if err := removeFile(gone); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1})
	if err != nil {
		t.Fatalf("prune beside a damaged unneeded pack: %v", err)
	}
	if _, err := r.stat(ctx, "packs/"+victim.String()); !errors.Is(err, errNoKey) || len(rep.Removed) != 1 {
		t.Fatalf("damaged pack still there (%v), removed %d", err, len(rep.Removed))
	}
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
}

func removeFile(p string) error { return os.Remove(p) }

// A missing pack: repair names it and the files it held.
func TestRepairNamesMissingPack(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	writeFile(t, filepath.Join(b.src, "a.bin"), randBytes(rand.New(rand.NewSource(6)), 3<<20), 0o644, time.Unix(1e9, 0))
	writeFile(t, filepath.Join(b.src, "small"), []byte("small"), 0o644, time.Unix(1e9, 0))
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := r.loadIndex(ctx)
	tid, _ := parseID(s.Tree)
	treeLoc, _ := x.lookup(tid)
	var gone ID
	for p := range x.packs {
		if p != treeLoc.Pack {
			gone = p
			break
		}
	}
	want := filesIn(t, r, s, gone)
	if err := r.del(ctx, "packs/"+gone.String()); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.MissingPacks) != 1 || !strings.Contains(rep.MissingPacks[0], gone.String()) || !slices.Equal(rep.Incomplete[s.ID], want) {
		t.Fatalf("repair: missing %v, incomplete %v; want %s and %v\n%s", rep.MissingPacks, rep.Incomplete, gone, want, rep)
	}
}
