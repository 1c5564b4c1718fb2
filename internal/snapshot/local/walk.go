package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// walk lists the source: every entry with its metadata (tree version 2:
// the root ".", owners, xattrs, hard links, holes, FIFOs and devices),
// in lexical order, parents first. Files are not read here.
func (c *creator) walk() ([]entry, error) {
	var entries []entry
	links := map[[2]uint64]string{} // (device, inode) -> first path of a file with several links
	err := filepath.WalkDir(c.src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", p, err)
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we walk
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(c.src, p)
		if d.IsDir() && !strings.Contains(rel, "/") && (strings.HasPrefix(rel, stagingPrefix) || strings.HasPrefix(rel, asidePrefix)) {
			return filepath.SkipDir // what an interrupted in-place restore left
		}
		e := entry{Path: filepath.ToSlash(rel), Mode: uint32(info.Mode().Perm() | info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)), MTime: info.ModTime().UnixNano()}
		st, _ := info.Sys().(*syscall.Stat_t)
		if st != nil {
			e.Inode, e.UID, e.GID = st.Ino, st.Uid, st.Gid
		}
		switch {
		case info.Mode().IsRegular():
			e.Type, e.Size = typeFile, info.Size()
			if st != nil && st.Nlink > 1 {
				k := [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := links[k]; ok {
					e.Type, e.Target, e.Size = typeHardlink, first, 0
					break
				}
				links[k] = e.Path
			}
			if st != nil && st.Blocks*512 < st.Size {
				e.Sparse = hasHoles(p, e.Size)
			}
			c.total.Add(e.Size)
		case info.IsDir():
			e.Type = typeDir
		case info.Mode()&fs.ModeSymlink != 0:
			e.Type = typeSymlink
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode()&fs.ModeNamedPipe != 0:
			e.Type = typeFIFO
		case info.Mode()&fs.ModeDevice != 0 && st != nil:
			e.Type, e.Rdev = typeBlock, uint64(st.Rdev)
			if info.Mode()&fs.ModeCharDevice != 0 {
				e.Type = typeChar
			}
		default:
			c.r.cfg.Logf("snapshot: skipping %s: a socket, or a file of an unknown kind", p)
			return nil
		}
		if e.Type != typeSymlink && e.Type != typeHardlink {
			if e.Xattrs, err = readXattrs(p); err != nil {
				return err
			}
		}
		entries = append(entries, e)
		return nil
	})
	return entries, err
}
