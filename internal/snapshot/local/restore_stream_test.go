package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// node is an entry of a crafted version 3 tree, with its directory's
// entries (in the order given, which may be no order).
type node struct {
	e    entry
	kids []node
}

// craftV3 stores a version 3 snapshot of root's entries, a blob per
// directory, its files' chunks the 4 bytes "evil" (unless they have
// chunks of their own).
func craftV3(t *testing.T, r *Repo, kids []node) string {
	t.Helper()
	ctx := context.Background()
	pk := newPacker(ctx, r)
	c := &creator{r: r, x: newIndex(), tpk: pk, pending: map[ID]bool{}}
	cd := r.newCodec()
	data := []byte("evil")
	did := r.sealer.blobID(data)
	sd, zd := cd.store(did, data)
	if err := pk.add(did, blobData, sd, zd, len(data)); err != nil {
		t.Fatal(err)
	}
	var put func([]node) ID
	put = func(ns []node) ID {
		var es []entry
		for _, n := range ns {
			e := n.e
			if e.Type == typeDir {
				sub := put(n.kids)
				e.Sub = &sub
			}
			if e.Type == typeFile && e.Chunks == nil {
				e.Size, e.Chunks = 4, []ID{did}
			}
			es = append(es, e)
		}
		id, err := c.putTree(cd, tree{Version: 3, Entries: es})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	sub := put(kids)
	tid, err := c.putTree(cd, tree{Version: 3, Entries: []entry{{Path: ".", Type: typeDir, Mode: 0o755, Sub: &sub}}})
	if err != nil {
		t.Fatal(err)
	}
	return commitCrafted(t, r, pk, tid)
}

// A version 3 tree is checked whole before a restore writes anything,
// though it is read a directory at a time: duplicates, links to what is
// not an earlier file, unknown types, chunks in no index. The sound
// tree of the same shapes restores (so each refusal is the check's).
func TestVersion3TreesCheckedBeforeWriting(t *testing.T) {
	t.Parallel()
	r, _ := setup(t)
	outside := t.TempDir()
	file := func(name string) node { return node{e: entry{Path: name, Type: typeFile, Mode: 0o644}} }
	dir := func(name string, kids ...node) node {
		return node{e: entry{Path: name, Type: typeDir, Mode: 0o755}, kids: kids}
	}
	sym := func(name, target string) node {
		return node{e: entry{Path: name, Type: typeSymlink, Mode: 0o777, Target: target}}
	}
	hard := func(name, target string) node { return node{e: entry{Path: name, Type: typeHardlink, Target: target}} }
	missing := hashOf([]byte("not stored"))

	sound := []node{dir("a", file("f"), dir("in", file("g"))), dir("b", file("e"), hard("l", "a/f"), hard("m", "a/in/g"), hard("n", "b/e")), file("x"), file("z")}
	dst := filepath.Join(t.TempDir(), "r")
	if err := r.Restore(context.Background(), craftV3(t, r, sound), snapshot.RestoreOptions{Target: dst}); err != nil {
		t.Fatalf("the sound tree: %v", err)
	}
	var f, l syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dst, "a/f"), &f); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(dst, "b/l"), &l); err != nil || l.Ino != f.Ino || f.Nlink != 2 {
		t.Fatalf("the sound tree's link: %v, inodes %d/%d, %d links", err, f.Ino, l.Ino, f.Nlink)
	}

	for name, tc := range map[string]struct {
		kids []node
		want string
	}{
		"duplicate file then symlink": {[]node{file("x"), file("y"), sym("x", outside)}, "given twice"},
		"duplicate dir then symlink":  {[]node{dir("d", file("x")), sym("d", outside)}, "given twice"},
		"duplicate in a subdirectory": {[]node{dir("d", file("x"), file("x"))}, "given twice"},
		"link to a later file":        {[]node{hard("a", "b"), file("b")}, "not an earlier file"},
		"link to a later directory's": {[]node{dir("a", hard("l", "b/f")), dir("b", file("f"))}, "not an earlier file"},
		"link to a directory":         {[]node{dir("d"), hard("l", "d")}, "not an earlier file"},
		"link to a symlink":           {[]node{sym("s", outside), hard("l", "s")}, "not an earlier file"},
		"link through a symlink":      {[]node{sym("s", outside), hard("l", "s/x")}, "not an earlier file"},
		"link to nothing":             {[]node{file("f"), hard("l", "g")}, "not an earlier file"},
		"link outside":                {[]node{file("f"), hard("l", "../../etc/passwd")}, "not an earlier file"},
		"link to itself":              {[]node{hard("l", "l")}, "not an earlier file"},
		"link with data":              {[]node{file("f"), {e: entry{Path: "l", Type: typeHardlink, Target: "f", Chunks: []ID{missing}}}}, "link with data"},
		"unknown type":                {[]node{file("f"), {e: entry{Path: "q", Type: "q"}}}, "unknown type"},
		"chunk in no index":           {[]node{file("f"), {e: entry{Path: "g", Type: typeFile, Size: 4, Chunks: []ID{missing}}}}, "in no index"},
	} {
		t.Run(name, func(t *testing.T) {
			id := craftV3(t, r, tc.kids)
			dst := filepath.Join(t.TempDir(), "r")
			err := r.Restore(context.Background(), id, snapshot.RestoreOptions{Target: dst})
			if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore: %v; want ErrCorrupt saying %q", err, tc.want)
			}
			if des, _ := os.ReadDir(dst); len(des) != 0 {
				t.Errorf("the target holds %v after a refused tree", des)
			}
			if des, _ := os.ReadDir(outside); len(des) != 0 {
				t.Fatalf("restore wrote outside the target: %v", des)
			}
		})
	}
}

// A restore in batches of a few files restores what one batch does:
// read-only directories get their mode only once their content is
// complete, hard links whose file is in an earlier batch (and an earlier,
// read-only directory) share its inode, every directory's mtime survives
// the entries created in it, and files whose content was stored with an
// early batch's come back whole, with their links.
func TestRestoreInBatches(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	src := b.src
	makeTree(t, src, 120, 64<<10)
	mt := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for i := range 5 {
		d := filepath.Join(src, "ro", fmt.Sprintf("d%d", i))
		for j := range 4 {
			writeFile(t, filepath.Join(d, fmt.Sprintf("f%d", j)), []byte(fmt.Sprintf("file %d %d", i, j)), 0o444, mt)
		}
	}
	must(t, os.MkdirAll(filepath.Join(src, "zlinks", "deep"), 0o755))
	for i := range 5 {
		must(t, os.Link(filepath.Join(src, "ro", fmt.Sprintf("d%d", i), "f0"), filepath.Join(src, "zlinks", "deep", fmt.Sprintf("l%d", i))))
	}
	must(t, os.Link(filepath.Join(src, "small/d01/f00001.txt"), filepath.Join(src, "small/d49/link")))
	// Last in the walk, in a read-only directory: copies of early files
	// (their blobs stored with the first batch's), one of them
	// hard-linked from a later directory.
	for i := range 4 {
		b, err := os.ReadFile(filepath.Join(src, "small", fmt.Sprintf("d%02d", i), fmt.Sprintf("f%05d.txt", i)))
		must(t, err)
		writeFile(t, filepath.Join(src, "zdup", fmt.Sprintf("copy%d", i)), b, 0o640, mt)
	}
	must(t, os.MkdirAll(filepath.Join(src, "zzlinks"), 0o755))
	must(t, os.Link(filepath.Join(src, "zdup", "copy1"), filepath.Join(src, "zzlinks", "l")))
	// Read-only and dated directories, deepest first.
	for _, d := range []string{"ro/d0", "ro/d1", "ro/d2", "ro/d3", "ro/d4", "ro", "zlinks/deep", "zlinks", "zdup", "zzlinks"} {
		must(t, os.Chmod(filepath.Join(src, d), 0o555))
		must(t, os.Chtimes(filepath.Join(src, d), mt, mt))
	}
	t.Cleanup(func() {
		filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	s, err := r.Create(context.Background(), snapshot.CreateOptions{})
	must(t, err)
	for _, n := range []int{1, 2, 7, 0} {
		t.Run(fmt.Sprintf("batch %d", n), func(t *testing.T) {
			r.restoreBatch = n
			restoreAndCompare(t, r, s.ID, src)
		})
	}
	// And the links: restored again, one file per batch.
	r.restoreBatch = 1
	dst := filepath.Join(t.TempDir(), "r")
	must(t, r.Restore(context.Background(), s.ID, snapshot.RestoreOptions{Target: dst}))
	t.Cleanup(func() {
		filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	for i := range 5 {
		a := lstat(t, filepath.Join(dst, "ro", fmt.Sprintf("d%d", i), "f0"))
		l := lstat(t, filepath.Join(dst, "zlinks", "deep", fmt.Sprintf("l%d", i)))
		if a.Ino != l.Ino || a.Nlink != 2 {
			t.Errorf("link %d: inodes %d and %d, %d links; want one inode, 2 links", i, a.Ino, l.Ino, a.Nlink)
		}
	}
	if a, l := lstat(t, filepath.Join(dst, "small/d01/f00001.txt")), lstat(t, filepath.Join(dst, "small/d49/link")); a.Ino != l.Ino {
		t.Errorf("small/d49/link is not a link of small/d01/f00001.txt")
	}
	if a, l := lstat(t, filepath.Join(dst, "zdup/copy1")), lstat(t, filepath.Join(dst, "zzlinks/l")); a.Ino != l.Ino || a.Nlink != 2 {
		t.Errorf("zzlinks/l is not a link of zdup/copy1")
	}
}
