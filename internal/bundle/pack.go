package bundle

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// File names of a bundle directory.
const (
	// ProcessorFile is the executable run for each job when the
	// configuration names no other.
	ProcessorFile = "processor"
	// SetupFile is the optional script run once per version.
	SetupFile = "setup"
)

// packTime is the modification time of every entry Pack writes, so the
// same directory always packs to the same bytes (and the same hash).
var packTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Pack writes dir as a zip archive to w, reproducibly: entries sorted by
// path, one fixed time, modes kept as 0755 for executables and 0644
// otherwise. A symlink is stored as a link when its target stays inside
// dir; one that leaves it is an error. Other special files are refused.
func Pack(dir string, w io.Writer) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return fmt.Errorf("pack bundle %s: %w", dir, err)
	}
	sort.Strings(files)
	zw := zip.NewWriter(w)
	for _, rel := range files {
		full := filepath.Join(dir, filepath.FromSlash(rel))
		fi, err := os.Lstat(full)
		if err != nil {
			return err
		}
		h := &zip.FileHeader{Name: rel, Modified: packTime, Method: zip.Deflate}
		switch {
		case fi.IsDir():
			h.Name += "/"
			h.Method = zip.Store
			h.SetMode(fs.ModeDir | 0o755)
			if _, err := zw.CreateHeader(h); err != nil {
				return err
			}
			continue
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			if !linkStaysInside(rel, target) {
				return fmt.Errorf("pack bundle %s: symlink %s points outside the bundle (%s); copy the file in instead", dir, rel, target)
			}
			h.SetMode(fs.ModeSymlink | 0o777)
			fw, err := zw.CreateHeader(h)
			if err != nil {
				return err
			}
			if _, err := io.WriteString(fw, target); err != nil {
				return err
			}
			continue
		case !fi.Mode().IsRegular():
			return fmt.Errorf("pack bundle %s: %s is not a regular file, directory or symlink", dir, rel)
		}
		mode := fs.FileMode(0o644)
		if fi.Mode()&0o111 != 0 {
			mode = 0o755
		}
		h.SetMode(mode)
		fw, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		f, err := os.Open(full)
		if err != nil {
			return err
		}
		_, err = io.Copy(fw, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("pack bundle %s: %s: %w", dir, rel, err)
		}
	}
	return zw.Close()
}

// linkStaysInside says whether a symlink at rel (slash-separated, inside
// the bundle) whose target is target resolves inside the bundle.
func linkStaysInside(rel, target string) bool {
	if target == "" || path.IsAbs(target) || filepath.IsAbs(target) {
		return false
	}
	resolved := path.Clean(path.Join(path.Dir(rel), filepath.ToSlash(target)))
	return resolved != ".." && !strings.HasPrefix(resolved, "../")
}

// HashDir is the version of a bundle directory: the SHA-256 of its Pack
// archive, as hex. A directory and the archive shipped from it have the
// same version.
func HashDir(dir string) (string, error) {
	h := sha256.New()
	if err := Pack(dir, h); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// HashFile returns the SHA-256 of a file, as hex.
func HashFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ErrHashMismatch is returned by Verify when a file is not the one named.
var ErrHashMismatch = errors.New("bundle: SHA-256 mismatch")

// Verify checks that the file's SHA-256 is want (hex). It returns
// ErrHashMismatch, wrapped with both hashes, when it is not.
func Verify(name, want string) error {
	got, err := HashFile(name)
	if err != nil {
		return fmt.Errorf("verify bundle: %w", err)
	}
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("%w: %s has %s, want %s; download it again", ErrHashMismatch, name, got, want)
	}
	return nil
}
