package local

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// countPuts counts the PUT requests per kind of object ("packs", ...).
type countPuts struct {
	next http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

func (c *countPuts) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut {
		// /<bucket>/<prefix>/<kind>/...
		parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/"), "/")
		if len(parts) >= 3 {
			c.mu.Lock()
			c.n[parts[2]]++
			c.mu.Unlock()
		}
	}
	return c.next.RoundTrip(req)
}

func (c *countPuts) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

// treeBlobs returns the tree blobs the index holds.
func treeBlobs(t *testing.T, r *Repo) map[ID]bool {
	t.Helper()
	x, err := r.loadIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[ID]bool{}
	x.each(func(id ID, sl slot) {
		if sl.typ == blobTree {
			out[id] = true
		}
	})
	return out
}

// An unchanged directory's tree is not written again: a snapshot of an
// unchanged volume puts no pack, and a change deep in one directory
// writes the blobs of that directory and of its ancestors only.
func TestUnchangedSubtreeNotRewritten(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	cp := &countPuts{next: http.DefaultTransport, n: map[string]int{}}
	client := s3.New(b.srv.Client.Options(), func(o *s3.Options) { o.HTTPClient = &http.Client{Transport: cp} })
	ctx := context.Background()
	r, err := Open(ctx, client, Config{Bucket: b.bucket, Source: b.src, PackSize: 1 << 20, Key: testKey()})
	if err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, d := range []string{"a/x/y", "a/z", "b/c", "d"} {
		for i := 0; i < 5; i++ {
			writeFile(t, filepath.Join(b.src, d, fmt.Sprintf("f%d", i)), []byte(d+fmt.Sprint(i)), 0o644, mt)
		}
	}
	if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cp.take()
	before := treeBlobs(t, r)
	var encoded []string // directories not taken from the parent as they were
	r.onTree = func(dir string, reused bool) {
		if !reused {
			encoded = append(encoded, dir)
		}
	}

	if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := cp.take(); n["packs"] != 0 || n["index"] != 0 || n["snapshots"] != 1 {
		t.Fatalf("a snapshot of an unchanged volume put %v, want one snapshot object and nothing else (locks aside)", n)
	}
	if len(encoded) != 0 {
		t.Fatalf("unchanged directories encoded again: %v", encoded)
	}

	// A file's content changes in a/x/y (its directories' mtimes do not).
	writeFile(t, filepath.Join(b.src, "a/x/y/f0"), []byte("changed"), 0o644, mt.Add(time.Hour))
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Tree blobs have packs of their own (so that the next snapshot
	// reads the parent's directories from a few ranges).
	if n := cp.take(); n["packs"] != 2 || n["index"] != 1 {
		t.Fatalf("one changed file put %v, want two packs (its data, the changed directories) and one index object", n)
	}
	if diff := cmp.Diff([]string{"a/x/y", "a/x", "a", "."}, encoded); diff != "" {
		t.Fatalf("directories encoded (-want +got):\n%s", diff)
	}
	var added int
	for id := range treeBlobs(t, r) {
		if !before[id] {
			added++
		}
	}
	// a/x/y, a/x, a, the source's entries, and the root blob.
	if added != 5 {
		t.Fatalf("%d tree blobs added, want 5 (a/x/y, a/x, a, the source directory, the root)", added)
	}
	restoreAndCompare(t, r, s.ID, b.src)
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	// Prune keeps the subtrees the kept snapshots share with removed ones.
	if _, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s.ID, b.src)
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
}

// A version 2 tree (one blob for the whole snapshot) still restores.
func TestRestoreVersion2Tree(t *testing.T) {
	t.Parallel()
	r, _ := setup(t)
	ctx := context.Background()
	id := craft(t, r, []entry{{Path: ".", Type: typeDir, Mode: 0o755}, {Path: "d", Type: typeDir, Mode: 0o755}, {Path: "d/f", Type: typeFile, Mode: 0o644}, {Path: "l", Type: typeSymlink, Target: "d/f"}})
	dst := filepath.Join(t.TempDir(), "r")
	if err := r.Restore(ctx, id, snapshot.RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "l")); err != nil || string(b) != "evil" {
		t.Fatalf("version 2 restore: %q %v", b, err)
	}
}

// A version 3 directory blob whose names are not one component is
// refused before anything is written.
func TestVersion3BadNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"..", "a/b", "", "."} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, _ := setup(t)
			ctx := context.Background()
			pk := newPacker(ctx, r)
			c := &creator{r: r, x: newIndex(), tpk: pk, pending: map[ID]bool{}}
			cd := r.newCodec()
			sub, err := c.putTree(cd, tree{Version: 3, Entries: []entry{{Path: name, Type: typeFile, Mode: 0o644}}})
			if err != nil {
				t.Fatal(err)
			}
			tid, err := c.putTree(cd, tree{Version: 3, Entries: []entry{{Path: ".", Type: typeDir, Mode: 0o755, Sub: &sub}}})
			if err != nil {
				t.Fatal(err)
			}
			id := commitCrafted(t, r, pk, tid)
			dst := filepath.Join(t.TempDir(), "r")
			err = r.Restore(ctx, id, snapshot.RestoreOptions{Target: dst})
			if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), "one path component") {
				t.Fatalf("restore of a name %q: %v, want ErrCorrupt", name, err)
			}
			if des, _ := os.ReadDir(dst); len(des) != 0 {
				t.Fatalf("restore wrote %v", des)
			}
		})
	}
}

// 200,000 empty files in 2,000 directories snapshot and restore, and the
// heap stays within a bound (no single tree blob, no giant JSON). Skipped
// with -short.
func TestManyFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("200,000 files")
	}
	r, b := setup(t)
	ctx := context.Background()
	const dirs, per = 2000, 100
	start := time.Now()
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(b.src, fmt.Sprintf("d%02d", d%50), fmt.Sprintf("e%04d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < per; i++ {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%03d", i)))
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
	t.Logf("generated %d files in %s", dirs*per, time.Since(start).Round(time.Millisecond))

	// The peak heap of each phase, sampled.
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	var report []string
	var most uint64
	phase := func(name string, fn func() error) {
		t.Helper()
		runtime.GC()
		peak.Store(0)
		start := time.Now()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p := peak.Load()
		most = max(most, p)
		report = append(report, fmt.Sprintf("%s %s (peak heap in use %d MB)", name, time.Since(start).Round(time.Millisecond), p>>20))
	}
	var s, s2 snapshot.Snapshot
	phase("create", func() (err error) { s, err = r.Create(ctx, snapshot.CreateOptions{}); return })
	phase("unchanged create", func() (err error) { s2, err = r.Create(ctx, snapshot.CreateOptions{}); return })
	dst := filepath.Join(t.TempDir(), "r")
	phase("restore", func() error { return r.Restore(ctx, s2.ID, snapshot.RestoreOptions{Target: dst}) })
	phase("verify", func() error { _, err := r.Verify(ctx, "", nil); return err })
	close(stop)
	<-done
	if s.Stats.Files != dirs*per || s2.Stats.BytesAdded != 0 {
		t.Fatalf("stats %+v, then %+v", s.Stats, s2.Stats)
	}
	n := 0
	filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if n != dirs*per {
		t.Fatalf("restored %d files, want %d", n, dirs*per)
	}
	rss, _ := maxRSS()
	t.Logf("%d files: %s; process peak RSS %d MB (the embedded S3 server included)", dirs*per, strings.Join(report, ", "), rss>>20)
	if most > 512<<20 {
		t.Fatalf("peak heap %d MB for %d files", most>>20, dirs*per)
	}
}

// maxRSS is the process's peak resident set size.
func maxRSS() (int64, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return ru.Maxrss << 10, true
}

// A version 2 parent (one flat tree) still spares reading the files it
// describes as they are: Create finds its directories by path.
func TestCreateOverVersion2Parent(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	mt := time.Unix(1e9, 0)
	writeFile(t, filepath.Join(b.src, "a/f1"), []byte("evil"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "b/f2"), []byte("not what the parent says"), 0o644, mt)
	ino := func(rel string) uint64 {
		st, err := os.Stat(filepath.Join(b.src, rel))
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	craft(t, r, []entry{
		{Path: ".", Type: typeDir, Mode: 0o755},
		{Path: "a", Type: typeDir, Mode: 0o755},
		{Path: "a/f1", Type: typeFile, Mode: 0o644, MTime: mt.UnixNano(), Inode: ino("a/f1")},
		{Path: "b", Type: typeDir, Mode: 0o755},
		{Path: "b/f2", Type: typeFile, Mode: 0o644, MTime: mt.UnixNano(), Inode: ino("b/f2")}, // size 4: changed
	})
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Stats.FilesRead != 1 || s.Stats.Files != 2 || s.Stats.Dirs != 2 {
		t.Fatalf("stats %+v: want 2 files, 2 directories, 1 read (b/f2; a/f1 is as the version 2 parent has it)", s.Stats)
	}
	restoreAndCompare(t, r, s.ID, b.src)
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
}

// Prune and verify read a directory the kept snapshots share once, not
// once per snapshot: their cost follows what changed, not how many
// snapshots are kept.
func TestSharedDirectoriesReadOnce(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	mt := time.Unix(1e9, 0)
	for d := 0; d < 10; d++ {
		for f := 0; f < 3; f++ {
			writeFile(t, filepath.Join(b.src, fmt.Sprintf("d%d/sub/f%d", d, f)), []byte(fmt.Sprint(d, f)), 0o644, mt)
		}
	}
	const snaps = 4
	for i := 0; i < snaps; i++ {
		writeFile(t, filepath.Join(b.src, "d0/sub/f0"), []byte(fmt.Sprint("version ", i)), 0o644, mt.Add(time.Duration(i)*time.Hour))
		if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	reads := map[ID]int{}
	r.onDirRead = func(id ID) {
		mu.Lock()
		defer mu.Unlock()
		reads[id]++
	}
	check := func(op string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		// 21 directories (the source, d0..d9, their sub) in the first
		// snapshot, and d0, d0/sub and the source again in each other.
		if want := 21 + 3*(snaps-1); len(reads) != want {
			t.Errorf("%s read %d directory blobs, want %d", op, len(reads), want)
		}
		for id, n := range reads {
			if n != 1 {
				t.Errorf("%s read directory blob %s %d times", op, id, n)
			}
		}
		clear(reads)
	}
	if _, err := r.Prune(ctx, snapshot.Policy{KeepLast: snaps}); err != nil {
		t.Fatal(err)
	}
	check("prune")
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	check("verify")
}

// Hard links are told apart in walk order however far the prefetchers
// run ahead: the first name in lexical order is the file, every other a
// link to it.
func TestHardLinksInWalkOrder(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	first := filepath.Join(b.src, "d00/sub/first")
	writeFile(t, first, []byte("one inode"), 0o644, time.Unix(1e9, 0))
	for i := 1; i < 40; i++ {
		p := filepath.Join(b.src, fmt.Sprintf("d%02d/sub/link", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(first, p); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 3; round++ {
		s, err := r.Create(ctx, snapshot.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		x, _ := r.loadIndex(ctx)
		tr, err := r.loadTree(ctx, x, s)
		if err != nil {
			t.Fatal(err)
		}
		links := 0
		for _, e := range tr.Entries {
			switch {
			case e.Path == "d00/sub/first":
				if e.Type != typeFile || len(e.Chunks) != 1 {
					t.Fatalf("round %d: the first name is %+v, want the file", round, e)
				}
			case strings.HasSuffix(e.Path, "/link"):
				if e.Type != typeHardlink || e.Target != "d00/sub/first" {
					t.Fatalf("round %d: %s is %+v, want a link to d00/sub/first", round, e.Path, e)
				}
				links++
			}
		}
		if links != 39 {
			t.Fatalf("round %d: %d links, want 39", round, links)
		}
		restoreAndCompare(t, r, s.ID, b.src)
		writeFile(t, filepath.Join(b.src, fmt.Sprintf("d%02d/new", round)), []byte("a change"), 0o644, time.Unix(2e9, 0))
	}
}
