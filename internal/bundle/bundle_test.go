package bundle_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/conveyorhq/conveyor/internal/bundle"
)

// writeBundle makes a bundle directory whose setup appends a line to
// count (so a test sees how often it ran) and exits with exit.
func writeBundle(t *testing.T, count string, exit int, extra string) string {
	t.Helper()
	dir := t.TempDir()
	// No fork of this process (tests run in parallel) may copy a write
	// descriptor of an executable: its exec would fail "text file busy".
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	files := map[string]string{
		"processor":    "#!/bin/sh\ncp \"$CONVEYOR_INPUT\" \"$CONVEYOR_OUTPUT_DIR/\"\n",
		"setup":        "#!/bin/sh\necho ran >> '" + count + "'\necho preparing\necho \"last words " + extra + "\" >&2\nexit " + string(rune('0'+exit)) + "\n",
		"lib/data.txt": "data " + extra + "\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		mode := os.FileMode(0o644)
		if !strings.Contains(name, "/") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("lib/data.txt", filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runs(t *testing.T, count string) int {
	b, err := os.ReadFile(count)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "ran\n")
}

func pack(t *testing.T, dir string) (string, string) {
	t.Helper()
	zipPath := filepath.Join(t.TempDir(), "bundle.zip")
	f, err := os.Create(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Pack(dir, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sha, err := bundle.HashFile(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	return zipPath, sha
}

func TestPackIsReproducibleAndUnpacks(t *testing.T) {
	t.Parallel()
	dir := writeBundle(t, "/dev/null", 0, "a")
	zipPath, sha := pack(t, dir)
	if h, err := bundle.HashDir(dir); err != nil || h != sha {
		t.Fatalf("HashDir = %s, %v; want the archive's %s", h, err, sha)
	}
	// Another time of the same content: the same archive.
	os.Chtimes(filepath.Join(dir, "processor"), bundle.OtherTime(), bundle.OtherTime())
	if h, _ := bundle.HashDir(dir); h != sha {
		t.Errorf("the hash follows modification times: %s != %s", h, sha)
	}
	dest := filepath.Join(t.TempDir(), sha)
	if err := bundle.Unpack(zipPath, dest); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dest, "processor"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("processor: %v, %v; want mode 0755", fi, err)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "data")); err != nil || string(b) != "data a\n" {
		t.Errorf("the symlink inside the bundle: %q, %v", b, err)
	}
	if h, _ := bundle.HashDir(dest); h != sha {
		t.Errorf("unpacked bundle hashes to %s, want %s", h, sha)
	}
	if err := bundle.Unpack(zipPath, dest); err == nil {
		t.Error("Unpack over an existing directory succeeded")
	}
	if err := bundle.Verify(zipPath, strings.Repeat("0", 64)); !errors.Is(err, bundle.ErrHashMismatch) {
		t.Errorf("Verify with a wrong hash: %v, want ErrHashMismatch", err)
	}
	if err := bundle.Verify(zipPath, sha); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestPackRefusesSymlinkOutside(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.Symlink("/etc/passwd", filepath.Join(dir, "x"))
	if err := bundle.Pack(dir, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "outside the bundle") {
		t.Errorf("Pack: %v, want a symlink-outside error", err)
	}
}

func TestUnpackRefusesEscapes(t *testing.T) {
	t.Parallel()
	type entry struct {
		name, body string
		link       bool
	}
	for name, entries := range map[string][]entry{
		"dot-dot":          {{name: "../evil", body: "x"}},
		"nested dot-dot":   {{name: "a/../../evil", body: "x"}},
		"absolute":         {{name: "/tmp/evil", body: "x"}},
		"symlink outside":  {{name: "l", body: "../../etc", link: true}},
		"absolute link":    {{name: "l", body: "/etc/passwd", link: true}},
		"through symlink":  {{name: "sub/l", body: "..", link: true}, {name: "sub/l/x", body: "../evil", link: true}},
		"backslash":        {{name: `..\evil`, body: "x"}},
		"duplicate writes": {{name: "a", body: "1"}, {name: "a", body: "2"}},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			zw := zip.NewWriter(&buf)
			for _, e := range entries {
				h := &zip.FileHeader{Name: e.name}
				if e.link {
					h.SetMode(os.ModeSymlink | 0o777)
				} else {
					h.SetMode(0o644)
				}
				w, _ := zw.CreateHeader(h)
				w.Write([]byte(e.body))
			}
			zw.Close()
			root := t.TempDir()
			archive := filepath.Join(root, "evil.zip")
			os.WriteFile(archive, buf.Bytes(), 0o644)
			dest := filepath.Join(root, "out", "b")
			if err := bundle.Unpack(archive, dest); err == nil {
				t.Fatalf("Unpack of %v succeeded", entries)
			}
			if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused archive left %s", dest)
			}
			if _, err := os.Lstat(filepath.Join(root, "evil")); err == nil {
				t.Error("an entry escaped the bundle")
			}
		})
	}
}

func TestSetupRunsOncePerVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	count := filepath.Join(t.TempDir(), "count")
	store := bundle.Store{Root: filepath.Join(t.TempDir(), "bundles")}
	zipPath, sha := pack(t, writeBundle(t, count, 0, "v1"))

	// Four workers start at once on one machine: setup runs once.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = store.Open(ctx, zipPath, sha, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := runs(t, count); n != 1 {
		t.Fatalf("setup ran %d times for 4 concurrent starts, want 1", n)
	}
	// A second start: no setup.
	b, err := store.Open(ctx, zipPath, sha, nil)
	if err != nil || runs(t, count) != 1 {
		t.Fatalf("second start: %v, setup runs %d, want 1", err, runs(t, count))
	}
	if b.Dir != filepath.Join(store.Root, sha) || b.Version() != "bundle:sha256:"+sha {
		t.Errorf("bundle %+v", b)
	}
	// A new version: setup again.
	zip2, sha2 := pack(t, writeBundle(t, count, 0, "v2"))
	if _, err := store.Open(ctx, zip2, sha2, nil); err != nil || runs(t, count) != 2 {
		t.Fatalf("new version: %v, setup runs %d, want 2", err, runs(t, count))
	}
	// A directory is versioned by its content.
	dir := writeBundle(t, count, 0, "v3")
	if _, err := store.Open(ctx, dir, "", nil); err != nil || runs(t, count) != 3 {
		t.Fatalf("directory: %v, runs %d, want 3", err, runs(t, count))
	}
	if _, err := store.Open(ctx, dir, "", nil); err != nil || runs(t, count) != 3 {
		t.Fatalf("directory again: %v, runs %d, want 3", err, runs(t, count))
	}
	// An archive that is not the version named is refused before anything
	// runs (a version already unpacked is taken from its directory).
	if _, err := (bundle.Store{Root: t.TempDir()}).Open(ctx, zip2, sha, nil); !errors.Is(err, bundle.ErrHashMismatch) {
		t.Errorf("wrong hash: %v, want ErrHashMismatch", err)
	}
}

func TestFailedSetupIsRetriedAndNamed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	count := filepath.Join(t.TempDir(), "count")
	store := bundle.Store{Root: t.TempDir()}
	dir := writeBundle(t, count, 1, "no package manager")
	var out bytes.Buffer
	b, err := store.Open(ctx, dir, "", &out)
	var se *bundle.SetupError
	if !errors.As(err, &se) {
		t.Fatalf("Open: %v, want a *SetupError", err)
	}
	if se.ExitCode != 1 || se.LastLine != "last words no package manager" || !strings.Contains(out.String(), "preparing") {
		t.Errorf("setup error %+v, output %q", se, out.String())
	}
	if !strings.Contains(err.Error(), "setup failed (exit 1): last words no package manager") {
		t.Errorf("message: %v", err)
	}
	if store.SetupDone(b) {
		t.Error("a failed setup left a stamp")
	}
	if log, _ := os.ReadFile(store.SetupLog(b)); !strings.Contains(string(log), "last words") {
		t.Errorf("setup log: %q", log)
	}
	if _, err := store.Open(ctx, dir, "", nil); err == nil || runs(t, count) != 2 {
		t.Errorf("next start: %v, setup runs %d; want it run again and fail", err, runs(t, count))
	}
}

// A directory runs from its own copy: what setup writes there (a virtual
// environment) changes neither the source nor the version.
func TestDirectoryRunsFromItsCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	count := filepath.Join(t.TempDir(), "count")
	dir := writeBundle(t, count, 0, "venv")
	syscall.ForkLock.RLock()
	os.WriteFile(filepath.Join(dir, "setup"), []byte("#!/bin/sh\necho ran >> '"+count+"'\nmkdir -p \"$CONVEYOR_BUNDLE_DIR/venv\" && touch \"$CONVEYOR_BUNDLE_DIR/venv/python\"\n"), 0o755)
	syscall.ForkLock.RUnlock()
	want, _ := bundle.HashDir(dir)
	store := bundle.Store{Root: t.TempDir()}
	for range 2 {
		b, err := store.Open(ctx, dir, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if b.SHA256 != want || b.Dir != filepath.Join(store.Root, want) {
			t.Errorf("bundle %+v, want version %s in its own directory", b, want)
		}
		if _, err := os.Stat(filepath.Join(b.Dir, "venv", "python")); err != nil {
			t.Errorf("setup's venv not in the bundle's copy: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "venv")); err == nil {
		t.Error("setup wrote into the source directory")
	}
	if n := runs(t, count); n != 1 {
		t.Errorf("setup ran %d times in 2 starts, want 1", n)
	}
	if _, err := store.Open(ctx, dir, strings.Repeat("a", 64), nil); !errors.Is(err, bundle.ErrHashMismatch) {
		t.Errorf("directory with a wrong bundle_sha256: %v, want ErrHashMismatch", err)
	}
}
