package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// bundle is what a test needs beside the repository.
type bundle struct {
	srv    *s3test.Server
	bucket string
	src    string
}

func setup(t *testing.T) (*Repo, bundle) {
	t.Helper()
	return setupOver(t, false)
}

// setupOver is setup with the repository reached through the server's
// in-process s3server.Direct when direct is set, through HTTP otherwise.
func setupOver(t *testing.T, direct bool) (*Repo, bundle) {
	t.Helper()
	srv := s3test.Start(t)
	b := bundle{srv: srv, bucket: srv.Bucket(t, "snap"), src: filepath.Join(t.TempDir(), "volume")}
	if err := os.MkdirAll(b.src, 0o755); err != nil {
		t.Fatal(err)
	}
	var store ObjectStore = srv.Client
	if direct {
		store = srv.Direct
	}
	r, err := Open(context.Background(), store, Config{Bucket: b.bucket, Source: b.src, PackSize: 1 << 20, Key: testKey()})
	if err != nil {
		t.Fatal(err)
	}
	return r, b
}

// testKey is the tests' password, with a cheap scrypt cost.
func testKey() *Password { return &Password{secret: []byte("test password"), logN: 10} }

func writeFile(t *testing.T, p string, data []byte, mode fs.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// logText is compressible, log-like text.
func logText(rng *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "2026-11-26T12:%02d:%02d.%03dZ INFO job=%08x step=%d bytes=%d msg=%q\n", i/60%60, i%60, i%1000, rng.Uint32(), rng.Intn(9), rng.Intn(1<<20), "processed chunk")
	}
	return b.Bytes()[:n]
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	rng.Read(b)
	return b
}

// makeTree writes a tree with every kind of entry and returns nothing: the
// comparison reads both trees back.
func makeTree(t *testing.T, root string, small int, big int) {
	t.Helper()
	rng := rand.New(rand.NewSource(1))
	mt := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	writeFile(t, filepath.Join(root, "empty.bin"), nil, 0o644, mt)
	writeFile(t, filepath.Join(root, "one"), []byte("x"), 0o600, mt)
	writeFile(t, filepath.Join(root, "logs", "big.log"), logText(rng, big), 0o640, mt)
	writeFile(t, filepath.Join(root, "bin", "random.bin"), randBytes(rng, big/2), 0o755, mt.Add(time.Hour))
	writeFile(t, filepath.Join(root, "bin", "copy.bin"), randBytes(rand.New(rand.NewSource(1)), 300<<10), 0o600, mt)
	writeFile(t, filepath.Join(root, "ünïcødé", "日本語 файл.txt"), []byte("hello, 世界"), 0o644, mt)
	for i := 0; i < small; i++ {
		writeFile(t, filepath.Join(root, "small", fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%05d.txt", i)), logText(rng, 1+rng.Intn(8<<10)), 0o644, mt.Add(time.Duration(i)*time.Second))
	}
	for _, d := range []string{"empty-dir", "nested/empty/dir"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("logs/big.log", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/does/not/exist", filepath.Join(root, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(root, "nested"), mt, mt); err != nil {
		t.Fatal(err)
	}
}

// fileInfo is what a round trip must preserve.
type fileInfo struct {
	Mode   fs.FileMode
	MTime  int64
	Data   string // hash of the content, or the link target
	IsLink bool
}

func readTree(t *testing.T, root string) map[string]fileInfo {
	t.Helper()
	out := map[string]fileInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi := fileInfo{Mode: info.Mode(), MTime: info.ModTime().UnixNano()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			fi.IsLink = true
			fi.Data, _ = os.Readlink(p)
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fi.Data = hashOf(b).String()
		}
		out[rel] = fi
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func restoreAndCompare(t *testing.T, r *Repo, id, src string) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "restored")
	// Read-only directories come back read-only: make them writable for
	// the temp dir's removal (which root needs not, an ordinary user does).
	t.Cleanup(func() {
		filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	if err := r.Restore(context.Background(), id, snapshot.RestoreOptions{Target: dst}); err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	if diff := cmp.Diff(readTree(t, src), readTree(t, dst)); diff != "" {
		t.Fatalf("restored tree differs (-source +restored):\n%s", diff)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	makeTree(t, b.src, 10000, 12<<20)
	s, err := r.Create(context.Background(), snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Stats.Files != 10006 {
		t.Errorf("files = %d, want 10006", s.Stats.Files)
	}
	restoreAndCompare(t, r, s.ID, b.src)
	if _, err := r.Verify(context.Background(), "", nil); err != nil {
		t.Fatal(err)
	}
}

func TestLargeFileRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB")
	}
	t.Parallel()
	r, b := setup(t)
	rng := rand.New(rand.NewSource(7))
	writeFile(t, filepath.Join(b.src, "half.log"), logText(rng, 25<<20), 0o644, time.Unix(1e9, 0))
	writeFile(t, filepath.Join(b.src, "big.bin"), append(randBytes(rng, 25<<20), logText(rng, 25<<20)...), 0o600, time.Unix(1e9, 5))
	s, err := r.Create(context.Background(), snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s.ID, b.src)
}

func TestIncremental(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	rng := rand.New(rand.NewSource(2))
	// Random content: compression cannot hide what is stored.
	logPath := filepath.Join(b.src, "logs", "job.log")
	writeFile(t, logPath, randBytes(rng, 24<<20), 0o644, time.Unix(1e9, 0))
	writeFile(t, filepath.Join(b.src, "other"), randBytes(rng, 1<<20), 0o644, time.Unix(1e9, 0))
	first, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Stats.BytesAdded < 25<<20 {
		t.Fatalf("first snapshot added %d bytes, want at least 25 MiB", first.Stats.BytesAdded)
	}

	// Nothing changed: nothing read, nothing added.
	same, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if same.Stats.FilesRead != 0 || same.Stats.BytesAdded != 0 || same.Parent != first.ID {
		t.Fatalf("unchanged snapshot: %+v, parent %s; want nothing read or added, parent %s", same.Stats, same.Parent, first.ID)
	}

	// Append 200 KiB to the log: about that much is added (plus the
	// re-cut last chunk, at most 4 MiB, and the tree).
	const appended = 200 << 10
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(randBytes(rng, appended))
	f.Close()
	inc, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if inc.Stats.FilesRead != 1 {
		t.Errorf("files read = %d, want 1 (only the log)", inc.Stats.FilesRead)
	}
	if max := int64(appended + chunkMax + 64<<10); inc.Stats.BytesAdded > max || inc.Stats.BytesAdded < appended {
		t.Errorf("appending %d bytes added %d bytes, want between %d and %d", appended, inc.Stats.BytesAdded, appended, max)
	}
	t.Logf("appended %d bytes, added %d", appended, inc.Stats.BytesAdded)
	restoreAndCompare(t, r, inc.ID, b.src)
}

// flipByte changes one byte of a stored object, on the server's disk.
func flipByte(t *testing.T, b bundle, key string, at int) {
	t.Helper()
	p := filepath.Join(b.srv.DataDir, b.bucket, key)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[at%len(data)] ^= 0xff
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionIsNamed(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	makeTree(t, b.src, 50, 3<<20)
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := r.list(ctx, "packs/")
	if err != nil || len(objs) < 2 {
		t.Fatalf("packs: %v %v", objs, err)
	}
	// The tree's pack would stop restore before it starts: damage a data pack.
	x, _ := r.loadIndex(ctx)
	tid, _ := parseID(s.Tree)
	treeLoc, _ := x.lookup(tid)
	var victim string
	for _, o := range objs {
		if o.Name != "packs/"+treeLoc.Pack.String() {
			victim = o.Name
			break
		}
	}
	flipByte(t, b, r.key(victim), 100)

	_, err = r.Verify(ctx, "", nil)
	if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), victim) {
		t.Fatalf("verify: %v; want ErrCorrupt naming %s", err, victim)
	}
	err = r.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: filepath.Join(t.TempDir(), "r")})
	if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), victim) {
		t.Fatalf("restore: %v; want ErrCorrupt naming %s", err, victim)
	}

	// A missing pack is named too.
	if err := r.del(ctx, victim); err != nil {
		t.Fatal(err)
	}
	_, err = r.Verify(ctx, s.ID, nil)
	if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), victim+" is missing") {
		t.Fatalf("verify after delete: %v; want it to name %s as missing", err, victim)
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	rng := rand.New(rand.NewSource(3))
	var snaps []snapshot.Snapshot
	for i := 0; i < 4; i++ {
		// Each round replaces a file: older snapshots own data of their own.
		writeFile(t, filepath.Join(b.src, "data.bin"), randBytes(rng, 3<<20), 0o644, time.Unix(int64(1e9+i), 0))
		writeFile(t, filepath.Join(b.src, "keep.txt"), []byte("always here"), 0o644, time.Unix(1e9, 0))
		s, err := r.Create(ctx, snapshot.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s)
	}
	before, _ := r.list(ctx, "packs/")
	rep, err := r.Prune(ctx, snapshot.Policy{KeepLast: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 2 || rep.PacksDeleted == 0 || rep.BytesFreed < 5<<20 {
		t.Fatalf("prune: removed %d snapshots, %d packs, %d bytes; want 2 snapshots and about 6 MiB", len(rep.Removed), rep.PacksDeleted, rep.BytesFreed)
	}
	after, _ := r.list(ctx, "packs/")
	t.Logf("packs %d -> %d, freed %d", len(before), len(after), rep.BytesFreed)
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, snaps[3].ID, b.src)
	if err := r.Restore(ctx, snaps[0].ID, snapshot.RestoreOptions{Target: t.TempDir()}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("restore of a pruned snapshot: %v, want ErrNotFound", err)
	}
}

func TestLocks(t *testing.T) {
	t.Parallel()
	r, _ := setup(t)
	ctx := context.Background()
	shared, err := r.lock(ctx, "create", false)
	if err != nil {
		t.Fatal(err)
	}
	// Creates run side by side; prune waits for them.
	other, err := r.lock(ctx, "create", false)
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	other.release()
	if _, err := r.Prune(ctx, snapshot.Policy{}); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("prune beside a create: %v, want ErrLocked", err)
	}
	shared.release()
	excl, err := r.lock(ctx, "prune", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.lock(ctx, "create", false); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("create beside a prune: %v, want ErrLocked", err)
	}
	excl.release()

	// A lock whose process is gone (on this kernel boot and PID
	// namespace) is stale and removed.
	putLock(t, r, "locks/dead", lockInfo{Exclusive: true, Op: "prune", Host: hostname(), PID: deadPID(t), Machine: machineID(), Created: time.Now(), Refreshed: time.Now()})
	var logged []string
	r.cfg.Logf = func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }
	l, err := r.lock(ctx, "create", false)
	if err != nil {
		t.Fatalf("lock beside a dead process's lock: %v", err)
	}
	l.release()
	if len(logged) != 1 || !strings.Contains(logged[0], "process is gone") {
		t.Fatalf("log = %q, want one line about the stale lock", logged)
	}
}

// deadPID is the PID of a process that has exited.
func deadPID(t *testing.T) int {
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	return p.Pid
}
