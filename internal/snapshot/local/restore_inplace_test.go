package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// An in-place restore that fails midway leaves the volume as it was; one
// that succeeds leaves exactly the snapshot, the root's mode included.
func TestRestoreInPlaceRollsBack(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	mt := time.Unix(1e9, 0)
	writeFile(t, filepath.Join(b.src, "a"), []byte("a1"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "d", "b"), []byte("b1"), 0o600, mt)
	writeFile(t, filepath.Join(b.src, "e", "f"), []byte("f1"), 0o600, mt)
	os.Chmod(b.src, 0o751)
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(t.TempDir(), "want")
	if err := r.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: want}); err != nil {
		t.Fatal(err)
	}
	// The volume changes after the snapshot.
	os.Remove(filepath.Join(b.src, "a"))
	writeFile(t, filepath.Join(b.src, "c"), []byte("new"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "d", "b"), []byte("b2"), 0o600, mt)
	os.Chmod(b.src, 0o700)
	before := readTree(t, b.src)

	renames := 0
	r.onSwap = func(from, to string) error {
		if renames++; renames == 5 { // the old content (3 names) aside, one new name in
			return errors.New("injected failure")
		}
		return nil
	}
	err = r.Restore(ctx, s.ID, snapshot.RestoreOptions{InPlace: true})
	if err == nil || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), "as it was") {
		t.Fatalf("restore with a failure midway: %v", err)
	}
	if diff := cmp.Diff(before, readTree(t, b.src)); diff != "" {
		t.Fatalf("the volume changed after a failed restore (-before +after):\n%s", diff)
	}
	if st, _ := os.Stat(b.src); st.Mode().Perm() != 0o700 {
		t.Errorf("root mode %o after a failed restore, want 0700", st.Mode().Perm())
	}

	r.onSwap = nil
	if err := r.Restore(ctx, s.ID, snapshot.RestoreOptions{InPlace: true}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(readTree(t, want), readTree(t, b.src)); diff != "" {
		t.Fatalf("in place differs from the snapshot (-snapshot +volume):\n%s", diff)
	}
	if st, _ := os.Stat(b.src); st.Mode().Perm() != 0o751 {
		t.Errorf("root mode %o after restore in place, want 0751", st.Mode().Perm())
	}
}

// A version 1 tree (no root entry, no owners) still restores.
func TestRestoreVersion1Tree(t *testing.T) {
	t.Parallel()
	r, _ := setup(t)
	ctx := context.Background()
	id := craft(t, r, []entry{{Path: "d", Type: typeDir, Mode: 0o755}, {Path: "d/f", Type: typeFile, Mode: 0o644 | uint32(os.ModeSetuid)}, {Path: "l", Type: typeSymlink, Target: "d/f"}})
	// craft writes the current version: rewrite as version 1.
	s, _ := r.Find(ctx, id)
	x, _ := r.loadIndex(ctx)
	tr, _ := r.loadTree(ctx, x, s)
	tr.Version = 1
	id1 := craftTree(t, r, tr)
	dst := filepath.Join(t.TempDir(), "r")
	if err := r.Restore(ctx, id1, snapshot.RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dst, "l"))
	st, _ := os.Stat(filepath.Join(dst, "d", "f"))
	if err != nil || string(b) != "evil" || st.Mode()&os.ModeSetuid != 0 {
		t.Fatalf("version 1 restore: %q %v, mode %v (set-ID dropped: no owner recorded)", b, err, st.Mode())
	}
}
