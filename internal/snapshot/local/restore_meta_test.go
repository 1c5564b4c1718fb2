package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Every property a volume's files have comes back, as root: owners,
// modes (the root directory's too), mtimes, xattrs, hard links, holes,
// FIFOs and devices; and set-ID bits are dropped when the owner is not
// restored.
func TestRestoreMetadataRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: owners, devices, security.* xattrs")
	}
	t.Parallel()
	r, b := setup(t)
	src := b.src
	mt := time.Date(2025, 5, 6, 7, 8, 9, 123456789, time.UTC)
	p := func(rel string) string { return filepath.Join(src, rel) }
	must(t, os.Mkdir(p("dir"), 0o755))
	must(t, os.WriteFile(p("dir/suid"), []byte("#!/bin/sh\n"), 0o755))
	must(t, os.Chown(p("dir/suid"), 1001, 1002))
	must(t, os.Chmod(p("dir/suid"), 0o755|os.ModeSetuid|os.ModeSetgid))
	must(t, os.WriteFile(p("dir/a"), []byte("linked"), 0o640))
	must(t, os.Link(p("dir/a"), p("b-link")))
	must(t, unix.Setxattr(p("dir/a"), "user.note", []byte("kept"), 0))
	must(t, unix.Setxattr(p("dir/a"), "trusted.t", []byte("root only"), 0))
	must(t, unix.Setxattr(p("dir/a"), "security.conveyor", []byte("root too"), 0))
	// Sparse: 64 KiB of data, a 32 MiB hole, 4 KiB of data.
	f, err := os.Create(p("sparse"))
	must(t, err)
	f.Write(bytes.Repeat([]byte("d"), 64<<10))
	f.WriteAt(bytes.Repeat([]byte("e"), 4<<10), 32<<20)
	f.Close()
	must(t, unix.Mkfifo(p("fifo"), 0o620))
	must(t, unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, os.Chmod(p("fifo"), 0o620))
	must(t, os.Chmod(p("null"), 0o666))
	must(t, os.Symlink("dir/a", p("sym")))
	must(t, os.Lchown(p("sym"), 1003, 1004))
	must(t, os.Chown(p("dir"), 1005, 1006))
	must(t, os.Chmod(p("dir"), 0o751|os.ModeSetgid))
	must(t, os.Chown(src, 1007, 1008))
	must(t, os.Chmod(src, 0o755))
	for _, n := range []string{"dir/suid", "dir/a", "sparse", "fifo", "null", "dir", "."} {
		must(t, os.Chtimes(p(n), mt, mt))
	}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p("sym"), timespecs(mt.UnixNano()), unix.AT_SYMLINK_NOFOLLOW))
	ctx := context.Background()
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	must(t, err)

	dst := filepath.Join(t.TempDir(), "r")
	must(t, r.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: dst}))
	q := func(rel string) string { return filepath.Join(dst, rel) }
	for _, c := range []struct {
		path     string
		uid, gid uint32
		mode     uint32
	}{
		{".", 1007, 1008, unix.S_IFDIR | 0o755},
		{"dir", 1005, 1006, unix.S_IFDIR | 0o751 | unix.S_ISGID},
		{"dir/suid", 1001, 1002, unix.S_IFREG | 0o755 | unix.S_ISUID | unix.S_ISGID},
		{"dir/a", 0, 0, unix.S_IFREG | 0o640},
		{"fifo", 0, 0, unix.S_IFIFO | 0o620},
		{"null", 0, 0, unix.S_IFCHR | 0o666},
		{"sym", 1003, 1004, unix.S_IFLNK | 0o777},
	} {
		st := lstat(t, q(c.path))
		if st.Uid != c.uid || st.Gid != c.gid || st.Mode != c.mode {
			t.Errorf("%s: %d:%d mode %o, want %d:%d mode %o", c.path, st.Uid, st.Gid, st.Mode, c.uid, c.gid, c.mode)
		}
		if got := time.Unix(0, st.Mtim.Nano()); !got.Equal(mt) {
			t.Errorf("%s: mtime %s, want %s", c.path, got, mt)
		}
	}
	if st := lstat(t, q("null")); st.Rdev != uint64(unix.Mkdev(1, 3)) {
		t.Errorf("device number %x, want 1,3", st.Rdev)
	}
	a, l := lstat(t, q("dir/a")), lstat(t, q("b-link"))
	if a.Ino != l.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inodes %d, %d, %d links; want one inode, 2 links", a.Ino, l.Ino, a.Nlink)
	}
	for name, want := range map[string]string{"user.note": "kept", "trusted.t": "root only", "security.conveyor": "root too"} {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(q("dir/a"), name, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("xattr %s = %q, %v; want %q", name, buf[:max(n, 0)], err, want)
		}
	}
	sp, orig := lstat(t, q("sparse")), lstat(t, p("sparse"))
	if sp.Size != orig.Size || sp.Blocks > orig.Blocks+16 {
		t.Errorf("sparse file: size %d, %d blocks; the source has %d, %d blocks", sp.Size, sp.Blocks, orig.Size, orig.Blocks)
	}
	got, _ := os.ReadFile(q("sparse"))
	want, _ := os.ReadFile(p("sparse"))
	if !bytes.Equal(got, want) {
		t.Error("sparse file content differs")
	}

	// As if by an ordinary user: no owner, so no set-ID bit of another.
	dst2 := filepath.Join(t.TempDir(), "r2")
	must(t, r.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: dst2, IgnoreOwner: true}))
	if st := lstat(t, filepath.Join(dst2, "dir/suid")); st.Uid != 0 || st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		t.Errorf("restored without owners: %d:%d mode %o; want owned by the restorer, set-ID bits dropped", st.Uid, st.Gid, st.Mode)
	}
}
