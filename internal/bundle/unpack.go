package bundle

import (
	"archive/zip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Unpack extracts the zip archive into dest, which must not exist: it
// is written beside it and renamed into place once complete, so dest
// holds a whole bundle or nothing. It refuses absolute names, names with
// "..", and symlinks whose target leaves the bundle; files keep the
// executable bit and nothing else of their mode.
func Unpack(archive, dest string) error {
	zr, err := zip.OpenReader(archive)
	if err != nil {
		return fmt.Errorf("unpack bundle %s: %w", archive, err)
	}
	defer zr.Close()
	links := map[string]bool{}
	for _, f := range zr.File {
		if err := checkEntry(f); err != nil {
			return fmt.Errorf("unpack bundle %s: %w", archive, err)
		}
		if f.Mode()&fs.ModeSymlink != 0 {
			links[path.Clean(f.Name)] = true
		}
	}
	// A symlink is checked where it lies; an entry reached through another
	// symlink would lie elsewhere, so none may be.
	for _, f := range zr.File {
		for dir := path.Dir(path.Clean(strings.TrimSuffix(f.Name, "/"))); dir != "."; dir = path.Dir(dir) {
			if links[dir] {
				return fmt.Errorf("unpack bundle %s: entry %q lies under the symlink %q", archive, f.Name, dir)
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	for _, f := range zr.File {
		if err := extract(f, tmp); err != nil {
			return fmt.Errorf("unpack bundle %s: %s: %w", archive, f.Name, err)
		}
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("unpack bundle %s: %w", archive, err)
	}
	return nil
}

// checkEntry refuses an entry that would write outside the bundle.
func checkEntry(f *zip.File) error {
	name := f.Name
	clean := path.Clean(strings.TrimSuffix(name, "/"))
	switch {
	case name == "" || strings.Contains(name, "\\"):
		return fmt.Errorf("entry %q: not a plain slash-separated name", name)
	case path.IsAbs(name) || clean == ".." || strings.HasPrefix(clean, "../") || clean == ".":
		return fmt.Errorf("entry %q leaves the bundle", name)
	case clean != strings.TrimSuffix(name, "/"):
		return fmt.Errorf("entry %q is not a clean path", name)
	}
	m := f.Mode()
	switch {
	case m&fs.ModeSymlink != 0:
		rc, err := f.Open()
		if err != nil {
			return err
		}
		target, err := io.ReadAll(io.LimitReader(rc, 4096))
		rc.Close()
		if err != nil {
			return err
		}
		if !linkStaysInside(clean, string(target)) {
			return fmt.Errorf("symlink %q points outside the bundle (%s)", name, target)
		}
	case m.IsDir(), m.IsRegular():
	default:
		return fmt.Errorf("entry %q is not a file, directory or symlink", name)
	}
	return nil
}

func extract(f *zip.File, root string) error {
	name := filepath.Join(root, filepath.FromSlash(path.Clean(strings.TrimSuffix(f.Name, "/"))))
	m := f.Mode()
	if m.IsDir() {
		return os.MkdirAll(name, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if m&fs.ModeSymlink != 0 {
		target, err := io.ReadAll(io.LimitReader(rc, 4096))
		if err != nil {
			return err
		}
		return os.Symlink(string(target), name)
	}
	perm := fs.FileMode(0o644)
	if m&0o111 != 0 {
		perm = 0o755
	}
	// No fork of this process may inherit the write descriptor: a child
	// holding it would make the bundle's executables fail with "text file
	// busy" when setup or the processor is run.
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	// O_EXCL: a second entry of the same name, or one behind a symlink
	// written earlier, is refused rather than followed.
	out, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, rc); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
