package local

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Tags given at create are stored with the snapshot, read back by List,
// and keep the snapshot through a prune whose other rules would remove it.
func TestTagsKeptThroughPrune(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	tags := []map[string]string{{"release": "1.0"}, nil, nil}
	var ids []string
	for i, tg := range tags {
		writeFile(t, filepath.Join(b.src, "f.txt"), []byte{byte('a' + i)}, 0o644, time.Unix(int64(1e9+i), 0))
		s, err := r.Create(ctx, snapshot.CreateOptions{Tags: tg})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
		time.Sleep(1100 * time.Millisecond) // snapshot IDs are named by the second
	}
	list, err := r.List(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("list: %v, %d snapshots", err, len(list))
	}
	for _, s := range list {
		if want := s.ID == ids[0]; snapshot.HasTag(s, "release=1.0") != want {
			t.Errorf("snapshot %s tags %v: tagged release=1.0 is %v, want %v", s.ID, s.Tags, !want, want)
		}
	}
	rep, err := r.PruneWith(ctx, snapshot.Policy{KeepLast: 1, KeepTags: []string{"release"}}, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || rep.Removed[0].ID != ids[1] {
		t.Fatalf("prune removed %+v, want only %s", rep.Removed, ids[1])
	}
	left, _ := r.List(ctx)
	if len(left) != 2 {
		t.Fatalf("%d snapshots left, want the tagged one and the newest", len(left))
	}
}
