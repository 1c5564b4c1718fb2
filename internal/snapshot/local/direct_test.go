package local

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// directAlign opens p (created) with O_DIRECT and returns the descriptor
// and the alignments writeDirect is given, or skips the test where the
// filesystem of the test's temporary directory has no direct I/O (tmpfs
// before 6.6 or without STATX_DIOALIGN, FUSE): what these tests check is
// then not reachable there, and restores write through the page cache.
func directAlign(t *testing.T, p string) (dfd int, align int64, mem uintptr) {
	t.Helper()
	dfd, err := unix.Open(p, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	var st unix.Statx_t
	if err == nil {
		err = unix.Statx(dfd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st)
	}
	if err != nil || st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_mem_align == 0 {
		var fs unix.Statfs_t
		unix.Statfs(filepath.Dir(p), &fs)
		t.Skipf("the filesystem of %s (type %#x) has no direct I/O with known alignments (%v): restores write through the page cache there", p, fs.Type, err)
	}
	t.Cleanup(func() { unix.Close(dfd) })
	return dfd, max(int64(st.Dio_offset_align), int64(st.Blksize), dioPage), uintptr(st.Dio_mem_align)
}

// writeDirect writes pieces given in any order, at any offset, from
// memory aligned or not, into the file they make up; only the aligned
// middle of a large piece goes direct, and a direct write the kernel
// refuses is written through the page cache instead.
func TestWriteDirect(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "f")
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	dfd, align, mem := directAlign(t, p)
	rng := rand.New(rand.NewSource(7))
	want := randBytes(rng, 9<<20+777)
	// Cuts: small pieces, pieces just over directMin, large ones, none
	// on a page boundary.
	var cuts []int
	for at := 0; at < len(want); {
		cuts = append(cuts, at)
		switch rng.Intn(3) {
		case 0:
			at += 1 + rng.Intn(8<<10)
		case 1:
			at += directMin + int(align) + 1 + rng.Intn(4<<10)
		default:
			at += 1<<20 + rng.Intn(2<<20)
		}
	}
	cuts = append(cuts, len(want))
	var wantDirect, gotDirect int64
	var scratch []byte
	order := rng.Perm(len(cuts) - 1)
	for n, k := range order {
		from, to := int64(cuts[k]), int64(cuts[k+1])
		a, b := (from+align-1)&^(align-1), to&^(align-1)
		if b-a >= directMin {
			wantDirect += b - a
		}
		// Half the pieces from memory at the file offset's phase (as
		// codec.openAt places them), half one byte off it.
		shift := int(from % dioPage)
		if n%2 == 1 {
			shift = (shift + 1) % dioPage
		}
		buf := make([]byte, int(to-from)+2*dioPage)
		at := (shift - int(addr(buf)%dioPage) + dioPage) % dioPage
		data := buf[at : at+int(to-from)]
		copy(data, want[from:to])
		got, copied, refused, err := writeDirect(fd, dfd, data, from, align, mem, &scratch, nil)
		if err != nil || refused {
			t.Fatalf("piece [%d, %d): %v (refused: %v)", from, to, err, refused)
		}
		if aligned := n%2 == 0; aligned && copied != 0 || !aligned && got > 0 && copied != got {
			t.Errorf("piece [%d, %d) from memory at the phase %v: %d of %d bytes copied", from, to, aligned, copied, got)
		}
		gotDirect += got
	}
	if wantDirect < 4<<20 {
		t.Fatalf("setup: only %d bytes would go direct", wantDirect)
	}
	if gotDirect != wantDirect {
		t.Errorf("%d bytes written direct, want %d", gotDirect, wantDirect)
	}
	// A memory alignment the kernel does not honour (1 where it needs
	// more): refused with EINVAL, written through the page cache.
	if mem > 1 {
		from := int64(len(want) / 3)
		buf := make([]byte, 1<<20+dioPage)
		at := (int(from%dioPage) + 1 - int(addr(buf)%dioPage) + dioPage) % dioPage
		data := buf[at : at+1<<20]
		copy(data, want[from:])
		got, _, refused, err := writeDirect(fd, dfd, data, from, align, 1, &scratch, nil)
		if err != nil || got != 0 || !refused {
			t.Fatalf("a misaligned direct write: %d bytes direct, refused %v, %v; want 0, refused, and the page cache", got, refused, err)
		}
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("file differs from byte %d (length %d, want %d)", i, len(got), len(want))
	}
}

// A restore writes the bulk of large files direct, whatever the phase
// of their chunks (compressed, stored raw, the same chunk at two phases,
// from an unencrypted repository), reopening files closed between their
// chunks; with Buffered, nothing goes direct. Every restore is exact.
func TestRestoreDirect(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	probe := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	directAlign(t, probe)
	rng := rand.New(rand.NewSource(3))
	mt := time.Unix(1.7e9, 0)
	rnd := randBytes(rng, 3<<20+4095)
	writeFile(t, filepath.Join(b.src, "log"), logText(rng, 5<<20+123), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "rand"), rnd, 0o644, mt)
	writeFile(t, filepath.Join(b.src, "shifted"), append(randBytes(rng, 100), rnd...), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "d", "small"), randBytes(rng, 200<<10), 0o600, mt)
	writeFile(t, filepath.Join(b.src, "d", "edge"), randBytes(rng, directMin+1), 0o600, mt)
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restore := func(opts snapshot.RestoreOptions) (direct, copied int64) {
		t.Helper()
		before, copiedBefore := r.directBytes.Load(), r.directCopied.Load()
		opts.Target = filepath.Join(t.TempDir(), "r")
		if err := r.Restore(ctx, s.ID, opts); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(readTree(t, b.src), readTree(t, opts.Target)); diff != "" {
			t.Fatalf("restored tree differs (-source +restored):\n%s", diff)
		}
		if open := openUnder(t, opts.Target); len(open) > 0 {
			t.Fatalf("descriptors left open after the restore: %q", open)
		}
		return r.directBytes.Load() - before, r.directCopied.Load() - copiedBefore
	}
	// Decrypted or decompressed at their phase, all but the chunks
	// "shifted" shares with "rand" go direct with no copy.
	large := int64(5<<20 + 3<<20 + 3<<20)
	if d, c := restore(snapshot.RestoreOptions{}); d < large*3/4 || c > 3<<20+4095 {
		t.Errorf("%d bytes of about %d in large files written direct, %d of them copied (want at most the 3 MiB of shifted)", d, large, c)
	}
	if d, _ := restore(snapshot.RestoreOptions{Buffered: true}); d != 0 {
		t.Errorf("a buffered restore wrote %d bytes direct", d)
	}
	r.maxOpen = 1 // each file closed after each chunk, reopened for the next
	if d, _ := restore(snapshot.RestoreOptions{}); d < large*3/4 {
		t.Errorf("with files reopened: %d bytes of about %d written direct", d, large)
	}
	r.maxOpen = 0

	// A filesystem that reports alignments and then refuses direct
	// writes (EINVAL): the first refusal turns them off for the rest of
	// the restore, which goes through the page cache, whole. Writes
	// already in flight on other workers may each try once.
	var tries atomic.Int64
	r.pwriteDirect = func(int, []byte, int64) error { tries.Add(1); return unix.EINVAL }
	refusedBefore := r.refusedDirect.Load()
	d, _ := restore(snapshot.RestoreOptions{})
	if n, refused := tries.Load(), r.refusedDirect.Load()-refusedBefore; d != 0 || n < 1 || n > int64(r.cfg.Uploads) || refused != n {
		t.Errorf("direct writes refused: %d bytes direct, %d tried, %d refused; want 0, and 1 to %d tries, each refused", d, n, refused, r.cfg.Uploads)
	}
	r.pwriteDirect = nil

	// Version 1 (unencrypted): stored chunks are copied to an aligned
	// buffer first.
	cfg := putV1Config(t, b, Config{Bucket: b.bucket, Prefix: "v1/", Source: b.src, PackSize: 1 << 20})
	r1, err := Open(ctx, b.srv.Client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = r1.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r = r1
	if d, c := restore(snapshot.RestoreOptions{}); d < large*3/4 || c == 0 {
		t.Errorf("unencrypted: %d bytes of about %d written direct, %d copied", d, large, c)
	}
}

// An in-place restore syncs the filesystem before it moves anything (the
// restored content on the disk) and again before it removes the old
// content (the renames on the disk). A failed first sync leaves the
// volume as it was; a failed second one keeps the old content aside.
func TestRestoreInPlaceSyncs(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	mt := time.Unix(1e9, 0)
	writeFile(t, filepath.Join(b.src, "a"), []byte("a1"), 0o644, mt)
	writeFile(t, filepath.Join(b.src, "d", "b"), []byte("b1"), 0o600, mt)
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.src, "c"), []byte("new"), 0o644, mt)
	var events []string
	r.onSwap = func(from, to string) error {
		events = append(events, "rename "+filepath.Base(from))
		return nil
	}
	fail := 0
	r.onSync = func(dir string) error {
		rel, _ := filepath.Rel(b.src, dir)
		events = append(events, "sync "+strings.Split(rel, "-")[0])
		if fail > 0 {
			if fail--; fail == 0 {
				return errors.New("injected sync failure")
			}
		}
		return nil
	}
	before := readTree(t, b.src)
	fail = 1
	err = r.Restore(ctx, s.ID, snapshot.RestoreOptions{InPlace: true})
	if err == nil || !strings.Contains(err.Error(), "injected sync failure") || !strings.Contains(err.Error(), "as it was") {
		t.Fatalf("restore whose first sync fails: %v", err)
	}
	if diff := cmp.Diff(before, readTree(t, b.src)); diff != "" {
		t.Fatalf("the volume changed (-before +after):\n%s", diff)
	}
	if want := []string{"sync .conveyor"}; !slices.Equal(events, want) {
		t.Fatalf("events %q, want %q", events, want)
	}

	events = nil
	if err := r.Restore(ctx, s.ID, snapshot.RestoreOptions{InPlace: true}); err != nil {
		t.Fatal(err)
	}
	// Three names aside (a, c, d), two in (a, d).
	want := []string{"sync .conveyor", "rename a", "rename c", "rename d", "rename a", "rename d", "sync ."}
	if !slices.Equal(events, want) {
		t.Fatalf("events %q, want %q", events, want)
	}
	if _, err := os.Stat(filepath.Join(b.src, "c")); !os.IsNotExist(err) {
		t.Fatalf("c is still in the volume: %v", err)
	}

	// The second sync fails: the restore stands, the old content stays.
	writeFile(t, filepath.Join(b.src, "c"), []byte("newer"), 0o644, mt)
	events, fail = nil, 2
	var logged []string
	r.cfg.Logf = func(f string, args ...any) { logged = append(logged, f) }
	if err := r.Restore(ctx, s.ID, snapshot.RestoreOptions{InPlace: true}); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(b.src)
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	if len(names) != 3 || !strings.HasPrefix(names[0], asidePrefix) {
		t.Fatalf("volume holds %q, want the old content aside beside a and d", names)
	}
	if got, err := os.ReadFile(filepath.Join(b.src, names[0], "c")); err != nil || string(got) != "newer" {
		t.Fatalf("old content aside: %q, %v", got, err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "kept in") {
		t.Fatalf("logged %q", logged)
	}
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// openUnder lists this process's open descriptors of files under dir.
func openUnder(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range des {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", d.Name())); err == nil && strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}
