package local

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Restore reaches every path through a descriptor of the target
// directory, and no symlink on the way is followed: an entry `a -> /etc`
// then `a/x` fails at `a` instead of writing /etc/x. openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS does this in one call (Linux 5.6);
// elsewhere each component is opened in turn with O_NOFOLLOW.

// noOpenat2 is set once openat2 is found missing (or by tests).
var noOpenat2 atomic.Bool

// openBeneath opens rel (slash-separated, relative, "." for root itself)
// under the directory root, following no symlink, the last component
// included.
func openBeneath(root int, rel string, flags int, mode uint32) (int, error) {
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	if !noOpenat2.Load() {
		how := &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		for try := 0; ; try++ {
			fd, err := unix.Openat2(root, rel, how)
			switch {
			case errors.Is(err, unix.EAGAIN) && try < 8:
				continue // a rename elsewhere on the filesystem raced the lookup
			case errors.Is(err, unix.ENOSYS):
				noOpenat2.Store(true)
			case errors.Is(err, unix.EPERM):
				// A seccomp filter that refuses the call; the stepwise
				// open decides.
			default:
				return fd, err
			}
			break
		}
	}
	return openStepwise(root, rel, flags, mode)
}

// openStepwise opens rel one component at a time from root, each
// directory with O_NOFOLLOW|O_DIRECTORY, refusing "..".
func openStepwise(root int, rel string, flags int, mode uint32) (int, error) {
	if rel == "." || rel == "" {
		return unix.Openat(root, ".", flags, mode)
	}
	parts := strings.Split(rel, "/")
	dir := root
	for i, p := range parts {
		if p == ".." || p == "" || p == "." {
			if dir != root {
				unix.Close(dir)
			}
			return -1, fmt.Errorf("%q: %w", rel, unix.EXDEV)
		}
		var fd int
		var err error
		if i == len(parts)-1 {
			fd, err = unix.Openat(dir, p, flags, mode)
		} else {
			fd, err = unix.Openat(dir, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if dir != root {
			unix.Close(dir)
		}
		if err != nil {
			if errors.Is(err, unix.ENOTDIR) && i < len(parts)-1 {
				err = unix.ELOOP // a symlink where a directory should be, most likely
			}
			return -1, err
		}
		dir = fd
	}
	return dir, nil
}

// splitPath returns the parent ("." for the top) and the last component.
func splitPath(rel string) (string, string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return ".", rel
	}
	return rel[:i], rel[i+1:]
}

// dirCache keeps the descriptor of the last parent directory opened:
// entries come sorted, so siblings follow one another.
type dirCache struct {
	root int
	path string
	fd   int
}

// parent returns a descriptor (O_PATH) of rel's parent directory and
// rel's last component. The descriptor belongs to the cache.
func (c *dirCache) parent(rel string) (int, string, error) {
	dir, base := splitPath(rel)
	if dir == "." {
		return c.root, base, nil
	}
	if c.path == dir && c.fd >= 0 {
		return c.fd, base, nil
	}
	c.close()
	fd, err := openBeneath(c.root, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open directory %s: %w", dir, beneathError(err))
	}
	c.path, c.fd = dir, fd
	return fd, base, nil
}

func (c *dirCache) close() {
	if c.path != "" && c.fd >= 0 {
		unix.Close(c.fd)
	}
	c.path, c.fd = "", -1
}

// beneathError says what a refused resolution means.
func beneathError(err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%w (a symlink or '..' on the way? restore follows none and writes nothing outside the target)", err)
	}
	return err
}
