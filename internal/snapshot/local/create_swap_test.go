package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// A file swapped after the walk for a symlink to a file outside the
// source, a directory on a file's path swapped for a symlink to a
// directory outside, and a file swapped for a FIFO: Create reads none of
// what lies outside, does not block, and records those files empty. (The
// processor writes the volume while a snapshot may run.)
func TestCreateReadsNothingSwappedInAfterTheWalk(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	mt := time.Unix(1e9, 0)
	secretDir := t.TempDir()
	secret := []byte("SECRET outside the volume\n")
	writeFile(t, filepath.Join(secretDir, "secret"), secret, 0o600, mt)
	writeFile(t, filepath.Join(secretDir, "x.txt"), secret, 0o600, mt)
	writeFile(t, filepath.Join(b.src, "a/data.txt"), []byte("inside, file one\n"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "dir2/x.txt"), []byte("inside, file two\n"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "c/fifo-soon"), []byte("inside, file three\n"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "z/kept.txt"), []byte("inside, untouched\n"), 0o644, mt)

	var mu sync.Mutex
	swapped := map[string]bool{}
	r.onRead = func(rel string) {
		mu.Lock()
		defer mu.Unlock()
		var err error
		switch rel {
		case "a/data.txt":
			p := filepath.Join(b.src, rel)
			if err = os.Remove(p); err == nil {
				err = os.Symlink(filepath.Join(secretDir, "secret"), p)
			}
		case "dir2/x.txt":
			d := filepath.Join(b.src, "dir2")
			if err = os.RemoveAll(d); err == nil {
				err = os.Symlink(secretDir, d)
			}
		case "c/fifo-soon":
			p := filepath.Join(b.src, rel)
			if err = os.Remove(p); err == nil {
				err = unix.Mkfifo(p, 0o644)
			}
		default:
			return
		}
		if err != nil {
			t.Errorf("swap %s: %v", rel, err)
			return
		}
		swapped[rel] = true
	}
	done := make(chan struct{})
	var s snapshot.Snapshot
	var err error
	go func() {
		defer close(done)
		s, err = r.Create(ctx, snapshot.CreateOptions{})
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("Create blocked (on the FIFO?)")
	}
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(swapped) != 3 {
		t.Fatalf("swapped %v: the setup did not swap all three", swapped)
	}
	mu.Unlock()
	// The setup did what it says: the secret is reachable through the
	// volume now.
	if got, err := os.ReadFile(filepath.Join(b.src, "dir2/x.txt")); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("setup: dir2/x.txt through the symlinked directory reads %q, %v", got, err)
	}
	dst := filepath.Join(t.TempDir(), "r")
	r.onRead = nil
	if err := r.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(dst, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("SECRET")) {
				t.Errorf("restored %s holds the secret from outside the volume", p)
			}
		}
		return nil
	})
	for _, rel := range []string{"a/data.txt", "dir2/x.txt", "c/fifo-soon"} {
		if st, err := os.Stat(filepath.Join(dst, rel)); err != nil || st.Size() != 0 {
			t.Errorf("%s restored as %v, %v; want an empty file (it changed under the snapshot)", rel, st, err)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "z/kept.txt")); string(got) != "inside, untouched\n" {
		t.Errorf("z/kept.txt restored as %q", got)
	}
}

// The extended attributes of an entry are read through its directory's
// descriptor: a directory on its path swapped for a symlink to a
// directory outside the source, after the walker opened it, does not lend
// the entry the attributes of the file outside.
func TestXattrsAreReadThroughTheDirectory(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	mt := time.Unix(1e9, 0)
	inside := filepath.Join(b.src, "d", "f")
	writeFile(t, inside, []byte("in"), 0o644, mt)
	if err := unix.Lsetxattr(inside, "user.who", []byte("inside"), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "f"), []byte("out"), 0o644, mt)
	if err := unix.Lsetxattr(filepath.Join(outside, "f"), "user.who", []byte("outside"), 0); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(filepath.Join(b.src, "d"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	if err := os.Rename(filepath.Join(b.src, "d"), filepath.Join(b.src, "d.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(b.src, "d")); err != nil {
		t.Fatal(err)
	}
	// The setup did what it says: by path, d/f is the file outside now.
	val := make([]byte, 64)
	if n, err := unix.Lgetxattr(inside, "user.who", val); err != nil || string(val[:n]) != "outside" {
		t.Fatalf("setup: d/f by path has user.who %q, %v", val[:max(n, 0)], err)
	}
	c := &creator{r: r}
	e, _, ok, err := c.statEntry(dfd, "f", inside)
	if err != nil || !ok {
		t.Fatalf("statEntry: %v, %v", ok, err)
	}
	if got := string(e.Xattrs["user.who"]); got != "inside" {
		t.Errorf("user.who recorded as %q, want %q (read through the directory)", got, "inside")
	}

	// Each way of reading them: listxattrat and getxattrat (Linux 6.13),
	// and /proc/self/fd/<dfd> on a kernel that answers ENOSYS.
	if _, err := listxattrat(dfd, "f", make([]byte, 64)); errors.Is(err, unix.ENOSYS) {
		t.Logf("this kernel has no listxattrat: only its fallback is tested")
	} else {
		var none atomic.Bool
		x, err := readXattrsVia(dfd, "f", inside, listxattrat, getxattrat, &none)
		if err != nil || string(x["user.who"]) != "inside" || none.Load() {
			t.Errorf("through listxattrat: user.who %q, %v (fell back: %v)", x["user.who"], err, none.Load())
		}
	}
	var none atomic.Bool
	enosys := func(int, string, []byte) (int, error) { return 0, unix.ENOSYS }
	gat := func(int, string, string, []byte) (int, error) {
		t.Error("getxattrat called after listxattrat said ENOSYS")
		return 0, unix.ENOSYS
	}
	for i := range 2 {
		x, err := readXattrsVia(dfd, "f", inside, enosys, gat, &none)
		if err != nil || string(x["user.who"]) != "inside" || !none.Load() {
			t.Errorf("without the *xattrat calls (%d): user.who %q, %v (fell back: %v)", i, x["user.who"], err, none.Load())
		}
	}
	// Refused with EPERM, as a seccomp filter that does not know them
	// may (systemd's SystemCallErrorNumber=EPERM): given up once the
	// older way has read the attributes.
	var refused atomic.Bool
	eperm := func(int, string, []byte) (int, error) { return 0, unix.EPERM }
	x, err := readXattrsVia(dfd, "f", inside, eperm, gat, &refused)
	if err != nil || string(x["user.who"]) != "inside" || !refused.Load() {
		t.Errorf("with the *xattrat calls refused: user.who %q, %v (given up: %v)", x["user.who"], err, refused.Load())
	}
	// But an entry the older way cannot read either is an error, and
	// the calls are kept.
	// (a descriptor of a file, not a directory: ENOTDIR).
	var kept atomic.Bool
	ffd, err := unix.Open(filepath.Join(b.src, "d.old", "f"), unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ffd)
	if _, err := readXattrsVia(ffd, "x", "f/x", eperm, gat, &kept); !errors.Is(err, unix.ENOTDIR) || kept.Load() {
		t.Errorf("refused, then failing the older way: %v (given up: %v), want ENOTDIR and the calls kept", err, kept.Load())
	}
}
