package local

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Names and link targets that are not valid UTF-8 come back exactly: two
// names that differ only in such bytes stay two files (JSON alone made
// them one, and the snapshot unrestorable), a directory, a symlink's
// target and a hard link's first path too; the next snapshot finds them
// unchanged.
func TestNamesNotUTF8(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	mt := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	writeFile(t, filepath.Join(b.src, "a\xffb"), []byte("one"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "a\xfeb"), []byte("two"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "dir\xc3", "f\x80"), []byte("three"), 0o600, mt)
	writeFile(t, filepath.Join(b.src, "plain"), []byte("four"), 0o644, mt)
	must(t, os.Symlink("to\xff/x", filepath.Join(b.src, "link")))
	must(t, os.Link(filepath.Join(b.src, "a\xffb"), filepath.Join(b.src, "hard")))
	must(t, unix.Setxattr(filepath.Join(b.src, "plain"), "user.odd\xff", []byte("v1"), 0))
	must(t, unix.Setxattr(filepath.Join(b.src, "plain"), "user.even", []byte("v2"), 0))
	for _, name := range []string{"a\xffb", "a\xfeb", "dir\xc3/f\x80"} {
		if _, err := os.Stat(filepath.Join(b.src, name)); err != nil {
			t.Fatal(err) // the setup itself
		}
	}
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s.ID, b.src)
	target := t.TempDir()
	if err := r.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(target, "link")); err != nil || got != "to\xff/x" {
		t.Fatalf("symlink target %q, %v", got, err)
	}
	var a, h os.FileInfo
	if a, err = os.Stat(filepath.Join(target, "a\xffb")); err == nil {
		h, err = os.Stat(filepath.Join(target, "hard"))
	}
	if err != nil || !os.SameFile(a, h) {
		t.Fatalf("the hard link to a\\xffb is not one: %v", err)
	}
	for name, want := range map[string]string{"user.odd\xff": "v1", "user.even": "v2"} {
		v := make([]byte, 16)
		n, err := unix.Getxattr(filepath.Join(target, "plain"), name, v)
		if err != nil || string(v[:n]) != want {
			t.Fatalf("xattr %q: %q, %v", name, v[:max(n, 0)], err)
		}
	}
	again, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Stats.FilesRead != 0 {
		t.Fatalf("the next snapshot read %d files again, want 0", again.Stats.FilesRead)
	}
}

// A tree whose names are all UTF-8 is stored as before, byte for byte,
// without the exact copies; one with a name that is not carries it in
// "pb" beside the JSON form, and reads back exactly.
func TestExactNames(t *testing.T) {
	plain := tree{Version: 3, Entries: []entry{{Path: "ünï", Type: typeFile}, {Path: "l", Type: typeSymlink, Target: "t"}}}
	want, _ := json.Marshal(plain)
	got, _ := json.Marshal(exactNames(plain))
	if !bytes.Equal(got, want) {
		t.Fatalf("a UTF-8 tree is stored as %s, want %s", got, want)
	}
	odd := tree{Version: 3, Entries: []entry{{Path: "a\xff", Type: typeFile, Xattrs: map[string][]byte{"user.\xfe": []byte("a"), "user.b": []byte("b")}}, {Path: "l", Type: typeSymlink, Target: "\xfe"}}}
	stored, _ := json.Marshal(exactNames(odd))
	if odd.Entries[0].PathBytes != nil || len(odd.Entries[0].Xattrs) != 2 {
		t.Fatal("exactNames changed the tree it was given")
	}
	if !bytes.Contains(stored, []byte(`"pb":`)) || !bytes.Contains(stored, []byte(`"lb":`)) || !bytes.Contains(stored, []byte(`"xb":`)) {
		t.Fatalf("stored %s: no exact copies", stored)
	}
	var back tree
	if err := decodeTree(stored, &back); err != nil {
		t.Fatal(err)
	}
	if back.Entries[0].Path != "a\xff" || back.Entries[1].Target != "\xfe" || back.Entries[0].PathBytes != nil {
		t.Fatalf("read back %+v", back.Entries)
	}
	if x := back.Entries[0].Xattrs; len(x) != 2 || string(x["user.\xfe"]) != "a" || string(x["user.b"]) != "b" || back.Entries[0].XattrBytes != nil {
		t.Fatalf("extended attributes read back: %q", x)
	}
	// Bytes that are not pairs: an error, not a panic.
	var bad tree
	if err := decodeTree([]byte(`{"version":3,"entries":[{"p":"a","t":"f","m":0,"mt":0,"xb":["eA=="]}]}`), &bad); err == nil {
		t.Fatal("an odd number of extended attribute bytes was accepted")
	}
}
