package local

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// After a prune stopped between its new index and the removal of the old
// one, the copy prune would keep of a duplicated blob is damaged: prune
// reads it, keeps the other copy too, and repair then loses nothing.
func TestPruneKeepsTheOtherCopyOfADamagedDuplicate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := newCrashScenario(t, "prune")
	r := sc.r
	packsBefore := objectNames(t, r, "packs/")
	cut, fl := openFast(t, sc.b, time.Minute, 10*time.Second)
	fail := func(req *http.Request) bool {
		return req.Method == http.MethodDelete && strings.Contains(req.URL.Path, "/index/")
	}
	fl.fail.Store(&fail)
	if _, err := cut.Prune(ctx, snapshot.Policy{KeepLast: 1}); err == nil {
		t.Fatal("prune that cannot delete the old index succeeded")
	}
	// The packs the cut prune wrote hold copies of blobs an old pack
	// holds too: damage one such copy.
	x, err := r.loadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	packsOf := map[ID][]ID{}
	for p, es := range x.packs {
		for _, e := range es {
			packsOf[e.ID] = append(packsOf[e.ID], p)
		}
	}
	var damaged *blobEntry
	for p, es := range x.packs {
		if slices.Contains(packsBefore, "packs/"+p.String()) {
			continue
		}
		for _, e := range es {
			if len(packsOf[e.ID]) > 1 && damaged == nil {
				damaged = &e
			}
		}
	}
	if damaged == nil {
		t.Fatal("the cut prune left no blob in two packs: the setup did not do what it should")
	}
	flipByte(t, sc.b, r.key("packs/"+damaged.Pack.String()), int(damaged.Offset)+int(damaged.Length)/2)

	var logged []string
	r.cfg.Logf = func(f string, a ...any) { logged = append(logged, f) }
	if _, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(logged, func(l string) bool { return strings.Contains(l, "every copy of it is kept") }) {
		t.Errorf("prune did not say it kept every copy of the damaged blob: %q", logged)
	}
	rep, err := r.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lost() || len(rep.DamagedPacks) != 1 {
		t.Fatalf("repair after prune: %+v; want the damaged pack replaced and nothing lost\n%s", rep, rep)
	}
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, mustLatest(t, r).ID, sc.b.src)
}
