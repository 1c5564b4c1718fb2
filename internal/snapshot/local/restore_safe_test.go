package local

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// craft stores a snapshot whose tree (version 2: one blob) is entries, as a malicious or
// damaged repository could hold; files get the content "evil".
func craft(t *testing.T, r *Repo, entries []entry) string {
	t.Helper()
	did := r.sealer.blobID([]byte("evil"))
	for i := range entries {
		if entries[i].Type == typeFile {
			entries[i].Size, entries[i].Chunks = 4, []ID{did}
		}
	}
	return craftTree(t, r, &tree{Version: 2, Entries: entries}) // one flat blob, as version 2 wrote
}

// craftTree stores a snapshot of the tree tr (its files' chunks "evil").
func craftTree(t *testing.T, r *Repo, tr *tree) string {
	t.Helper()
	ctx := context.Background()
	data := []byte("evil")
	did := r.sealer.blobID(data)
	tb, _ := json.Marshal(tr)
	tid := r.sealer.blobID(tb)
	pk := newPacker(ctx, r)
	cd := r.newCodec()
	sd, zd := cd.store(did, data)
	st, zt := cd.store(tid, tb)
	pk.add(did, blobData, sd, zd, len(data))
	pk.add(tid, blobTree, st, zt, len(tb))
	return commitCrafted(t, r, pk, tid)
}

// commitCrafted stores a crafted snapshot: pk's packs, their index, and
// a snapshot whose tree is tid.
func commitCrafted(t *testing.T, r *Repo, pk *packer, tid ID) string {
	t.Helper()
	ctx := context.Background()
	packs, err := pk.finish()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.writeIndex(ctx, packs); err != nil {
		t.Fatal(err)
	}
	s := snapshot.Snapshot{ID: snapshotName(time.Now()), Time: time.Now(), Tree: tid.String()}
	if err := r.putSnapshot(ctx, s); err != nil {
		t.Fatal(err)
	}
	return s.ID
}

// A malicious tree restores nothing outside the target, and fails
// clearly before writing anything.
func TestRestoreMaliciousTrees(t *testing.T) {
	t.Parallel()
	r, _ := setup(t)
	outside := t.TempDir()
	dir := entry{Type: typeDir, Mode: 0o755}
	file := entry{Type: typeFile, Mode: 0o644}
	at := func(e entry, p string) entry { e.Path = p; return e }
	link := func(p, target string) entry { return entry{Path: p, Type: typeSymlink, Mode: 0o777, Target: target} }
	for name, tc := range map[string]struct {
		entries []entry
		want    string
	}{
		"symlink then a path through it": {[]entry{link("a", outside), at(file, "a/x")}, "not a directory"},
		"symlink to /etc then a path":    {[]entry{link("a", "/etc"), at(dir, "a/conveyor-never"), at(file, "a/conveyor-never/x")}, "not a directory"},
		"dotdot":                         {[]entry{at(file, "../x")}, `".." component`},
		"dotdot inside":                  {[]entry{at(dir, "d"), at(file, "d/../../x")}, `".." component`},
		"absolute":                       {[]entry{at(file, outside+"/x")}, "not a relative path"},
		"duplicate":                      {[]entry{at(file, "x"), link("x", outside)}, "given twice"},
		"duplicate dir then symlink":     {[]entry{at(dir, "d"), link("d", outside), at(file, "d/x")}, "given twice"},
		"hard link outside":              {[]entry{{Path: "h", Type: typeHardlink, Target: "../../etc/passwd"}}, "not an earlier file"},
		"dot component":                  {[]entry{at(dir, "d"), at(file, "d/./x")}, `"." component`},
		"no parent":                      {[]entry{at(file, "nodir/x")}, "has none"},
		"empty component":                {[]entry{at(dir, "d"), at(file, "d//x")}, `"" component`},
		"trailing slash":                 {[]entry{at(dir, "d"), at(file, "d/")}, `"" component`},
		"dotdot last":                    {[]entry{at(dir, "d"), at(file, "d/..")}, `".." component`},
	} {
		t.Run(name, func(t *testing.T) {
			id := craft(t, r, tc.entries)
			dst := filepath.Join(t.TempDir(), "r")
			err := r.Restore(context.Background(), id, snapshot.RestoreOptions{Target: dst})
			if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore: %v; want ErrCorrupt saying %q", err, tc.want)
			}
			if des, _ := os.ReadDir(dst); len(des) != 0 {
				t.Errorf("the target holds %d entries after a refused tree", len(des))
			}
			if des, _ := os.ReadDir(outside); len(des) != 0 {
				t.Fatalf("restore wrote outside the target: %v", des)
			}
			if _, err := os.Lstat("/etc/conveyor-never"); err == nil {
				t.Fatal("restore wrote into /etc")
			}
		})
	}
}

// Whatever the tree says, no open follows a symlink: openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or step by step with O_NOFOLLOW.
func TestOpenBeneathFollowsNoSymlink(t *testing.T) {
	target, outside := t.TempDir(), t.TempDir()
	os.Symlink(outside, filepath.Join(target, "a"))
	os.Mkdir(filepath.Join(target, "d"), 0o755)
	os.Symlink("../a", filepath.Join(target, "d", "up"))
	os.WriteFile(filepath.Join(outside, "x"), nil, 0o644)
	root, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	for _, stepwise := range []bool{false, true} {
		noOpenat2.Store(stepwise)
		for _, p := range []string{"a/x", "a", "d/up/x", "d/up", "d/../a/x", "../x"} {
			fd, err := openBeneath(root, p, unix.O_WRONLY|unix.O_CREAT, 0o600)
			if err == nil {
				unix.Close(fd)
				t.Errorf("stepwise=%v: %s opened", stepwise, p)
			}
		}
		c := dirCache{root: root, fd: -1}
		if _, _, err := c.parent("a/y"); err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Errorf("stepwise=%v: parent of a/y: %v, want a refusal naming the symlink", stepwise, err)
		}
		if fd, err := openBeneath(root, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0); err != nil {
			t.Errorf("stepwise=%v: d: %v", stepwise, err)
		} else {
			unix.Close(fd)
		}
	}
	noOpenat2.Store(false)
	if des, _ := os.ReadDir(outside); len(des) != 1 {
		t.Fatalf("outside changed: %v", des)
	}
}
