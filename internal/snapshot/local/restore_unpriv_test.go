package local

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/s3server"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// nobody is the user an unprivileged restore runs as.
const nobody = 65534

// TestUnprivilegedRestoreLinksThroughClosedDirectories: a user who is not
// root restores a tree in which a directory's mode gives its owner no
// search permission (0600) and a hard link in a later batch names a file
// in it. The directory is finished (its mode applied) only after the
// last batch, so the link can still reach its file; root, who needs no
// search permission, never showed this.
func TestUnprivilegedRestoreLinksThroughClosedDirectories(t *testing.T) {
	if os.Getenv("CONVEYOR_TEST_RESTORE_ENDPOINT") != "" {
		restoreAsChild(t)
		return
	}
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("runs a restore as another user: needs root")
	}
	r, b := setup(t)
	src := b.src
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	writeFile(t, filepath.Join(src, "a", "f"), []byte("the linked file"), 0o644, mt)
	writeFile(t, filepath.Join(src, "a", "g"), []byte("another"), 0o644, mt)
	writeFile(t, filepath.Join(src, "a", "sub", "h"), []byte("deeper"), 0o644, mt)
	writeFile(t, filepath.Join(src, "b", "x"), []byte("a later batch"), 0o644, mt)
	must(t, os.Link(filepath.Join(src, "a", "f"), filepath.Join(src, "b", "l")))
	must(t, os.Link(filepath.Join(src, "a", "sub", "h"), filepath.Join(src, "b", "m")))
	must(t, os.Chmod(filepath.Join(src, "a", "sub"), 0o600))
	must(t, os.Chmod(filepath.Join(src, "a"), 0o600))
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "a"), 0o755); os.Chmod(filepath.Join(src, "a", "sub"), 0o755) })
	s, err := r.Create(context.Background(), snapshot.CreateOptions{})
	must(t, err)

	// The child is this test binary, copied where nobody may run it, in a
	// directory nobody owns.
	dir, err := os.MkdirTemp("", "conveyor-unpriv-")
	must(t, err)
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		os.RemoveAll(dir)
	})
	must(t, os.Chown(dir, nobody, nobody))
	bin := filepath.Join(dir, "test.bin")
	copyExecutable(t, bin)
	target := filepath.Join(dir, "restored")
	cmd := exec.Command(bin, "-test.run=^TestUnprivilegedRestoreLinksThroughClosedDirectories$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"CONVEYOR_TEST_RESTORE_ENDPOINT="+b.srv.Endpoint, "CONVEYOR_TEST_RESTORE_BUCKET="+b.bucket,
		"CONVEYOR_TEST_RESTORE_ID="+s.ID, "CONVEYOR_TEST_RESTORE_TARGET="+target)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("restore as uid %d: %v\n%s", nobody, err, out)
	}

	// As the restoring user would see it (checked as root): the links
	// share their file's inode, the directories have their modes, and the
	// restorer owns what it made.
	for _, l := range [][2]string{{"a/f", "b/l"}, {"a/sub/h", "b/m"}} {
		f, g := lstat(t, filepath.Join(target, l[0])), lstat(t, filepath.Join(target, l[1]))
		if f.Ino != g.Ino || f.Nlink != 2 {
			t.Errorf("%s and %s: inodes %d and %d, %d links; want one inode, 2 links", l[0], l[1], f.Ino, g.Ino, f.Nlink)
		}
		if f.Uid != nobody {
			t.Errorf("%s is owned by %d, want the restorer (%d)", l[0], f.Uid, nobody)
		}
	}
	for _, d := range []string{"a", "a/sub"} {
		if st := lstat(t, filepath.Join(target, d)); st.Mode&0o7777 != 0o600 {
			t.Errorf("%s: mode %o, want 600", d, st.Mode&0o7777)
		}
	}
	got, err := os.ReadFile(filepath.Join(target, "b", "l"))
	if err != nil || string(got) != "the linked file" {
		t.Errorf("b/l reads %q, %v", got, err)
	}
}

// restoreAsChild is the child's side: one file per batch, so that the
// links come in batches after their files' directory.
func restoreAsChild(t *testing.T) {
	if os.Geteuid() != nobody {
		t.Fatalf("the child runs as uid %d, want %d", os.Geteuid(), nobody)
	}
	client := s3server.NewClient(os.Getenv("CONVEYOR_TEST_RESTORE_ENDPOINT"), s3test.AccessKey, s3test.SecretKey, s3test.Region)
	r, err := Open(context.Background(), client, Config{Bucket: os.Getenv("CONVEYOR_TEST_RESTORE_BUCKET"), Key: testKey()})
	if err != nil {
		t.Fatal(err)
	}
	r.restoreBatch = 1
	if err := r.Restore(context.Background(), os.Getenv("CONVEYOR_TEST_RESTORE_ID"), snapshot.RestoreOptions{Target: os.Getenv("CONVEYOR_TEST_RESTORE_TARGET")}); err != nil {
		t.Fatal(err)
	}
}

// copyExecutable copies the running test binary to path, mode 0755.
func copyExecutable(t *testing.T, path string) {
	t.Helper()
	self, err := os.Executable()
	must(t, err)
	in, err := os.Open(self)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	must(t, err)
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	must(t, out.Close())
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatal(fmt.Sprint("copy of the test binary: ", st, err, " ", strconv.Quote(path)))
	}
}
