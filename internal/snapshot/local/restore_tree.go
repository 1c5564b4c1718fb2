package local

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

// checkTree refuses, before anything is written, a tree that would write
// outside the target or twice to one path: an absolute path, a "." or
// ".." component, an empty one, a path given twice, an entry whose parent
// is not a directory of the tree (`a -> /etc` then `a/x`), a hard link to
// anything but an earlier file.
func checkTree(t *tree) error {
	kind := make(map[string]byte, len(t.Entries)) // path -> type (its one letter)
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.Path == "." {
			if e.Type != typeDir {
				return fmt.Errorf("tree entry %q: the root is not a directory", e.Path)
			}
		} else if err := checkPath(e.Path); err != nil {
			return err
		}
		if _, dup := kind[e.Path]; dup {
			return fmt.Errorf("tree entry %q is given twice", e.Path)
		}
		if e.Path != "." {
			if dir, _ := splitPath(e.Path); dir != "." && kind[dir] != typeDir[0] {
				if kind[dir] == 0 {
					return fmt.Errorf("tree entry %q comes before its directory %q, or has none", e.Path, dir)
				}
				return fmt.Errorf("tree entry %q is under %q, which is not a directory (type %q): restore follows no link", e.Path, dir, string(kind[dir]))
			}
		}
		switch e.Type {
		case typeHardlink:
			if kind[e.Target] != typeFile[0] {
				return fmt.Errorf("tree entry %q links to %q, which is not an earlier file of the tree", e.Path, e.Target)
			}
			if len(e.Chunks) > 0 {
				return fmt.Errorf("tree entry %q is a link with data", e.Path)
			}
		case typeFile, typeDir, typeSymlink, typeFIFO, typeChar, typeBlock:
		default:
			return fmt.Errorf("tree entry %q has unknown type %q; a newer conveyor wrote it", e.Path, e.Type)
		}
		kind[e.Path] = e.Type[0]
	}
	return nil
}

// createEntry creates e as base in the directory pfd; a file, empty (one
// with data is created by its first write).
func createEntry(pfd int, base string, t *tree, e *entry, own owners, dirs *dirCache, warn func(string, ...any)) error {
	err := createOther(pfd, base, t, e, own, dirs, warn)
	if err != errIsFile {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	return finishFile(fd, t, e, 0, own, warn)
}

var errIsFile = errors.New("a regular file")

// createOther creates what is not a regular file (errIsFile for one).
func createOther(pfd int, base string, t *tree, e *entry, own owners, dirs *dirCache, warn func(string, ...any)) error {
	switch e.Type {
	case typeDir:
		return unix.Mkdirat(pfd, base, 0o700)
	case typeFile:
		return errIsFile
	case typeHardlink:
		// The first name was created earlier, in a directory of the tree
		// (checkTree): reach it the same way.
		odir, obase := splitPath(e.Target)
		ofd := dirs.root
		if odir != "." {
			fd, err := openBeneath(dirs.root, odir, unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			ofd = fd
		}
		return unix.Linkat(ofd, obase, pfd, base, 0)
	case typeSymlink:
		if err := unix.Symlinkat(e.Target, pfd, base); err != nil {
			return err
		}
		if _, err := own.chown(pfd, base, e, warn); err != nil {
			return err
		}
		return unix.UtimesNanoAt(pfd, base, timespecs(e.MTime), unix.AT_SYMLINK_NOFOLLOW)
	case typeFIFO, typeChar, typeBlock:
		mode := uint32(unix.S_IFIFO)
		switch e.Type {
		case typeChar:
			mode = unix.S_IFCHR
		case typeBlock:
			mode = unix.S_IFBLK
		}
		if mode != unix.S_IFIFO && !own.root {
			warn("snapshot: restore %s: device nodes are restored by root only; skipped", e.Path)
			return nil
		}
		if err := unix.Mknodat(pfd, base, mode|0o600, int(e.Rdev)); err != nil {
			return err
		}
		// Opened without blocking or following, to set the rest through
		// the descriptor.
		fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		p := fmt.Sprintf("/proc/self/fd/%d", fd)
		owned, err := own.chown(pfd, base, e, warn)
		if err != nil {
			return err
		}
		if err := unix.Chmod(p, own.modeAs(t, e, owned)); err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, timespecs(e.MTime), 0)
	}
	return fmt.Errorf("unknown entry type %q", e.Type)
}

// finishDir gives a directory its owner, mode, xattrs and mtime.
func finishDir(fd int, t *tree, e *entry, own owners, warn func(string, ...any)) error {
	owned, err := own.chown(fd, "", e, warn)
	if err != nil {
		return err
	}
	if err := unix.Fchmod(fd, own.modeAs(t, e, owned)); err != nil {
		return err
	}
	if err := own.setXattrs(fd, e, warn); err != nil {
		return err
	}
	return futimens(fd, timespecs(e.MTime))
}

func modeBits(m uint32) fs.FileMode {
	return fs.FileMode(m) & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// checkPath refuses paths that would leave the target or are not in
// normal form: absolute, empty, or with an empty, "." or ".." component.
func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") {
		return fmt.Errorf("tree entry %q is not a relative path", p)
	}
	for rest := p; ; {
		c, more, found := strings.Cut(rest, "/")
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("tree entry %q has a %q component: it could leave the target directory", p, c)
		}
		if !found {
			return nil
		}
		rest = more
	}
}
