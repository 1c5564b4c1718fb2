package local

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Metadata beyond mode and mtime: owners, extended attributes, holes,
// and the rule for setuid and setgid when the owner cannot be restored.

// xattrPrefixes are the namespaces a snapshot keeps. user.* is restored
// by anyone, the others only by root (trusted.* is readable by root only).
var xattrPrefixes = []string{"user.", "security.", "trusted."}

// procFD is where this process's descriptors are reachable by path.
const procFD = "/proc/self/fd"

// haveProcFD: without /proc, extended attributes are read by path.
var haveProcFD = sync.OnceValue(func() bool {
	_, err := os.Stat(procFD)
	return err == nil
})

// readXattrs returns the extended attributes of the entry name in the
// directory dfd (p names it in messages), not following a symlink; nil
// when there are none or the filesystem has none. The entry is reached
// through dfd, so that a directory on p swapped for a symlink since dfd
// was opened does not lend the snapshot the attributes of a file outside
// the source: with listxattrat and getxattrat (Linux 6.13), or before
// them as /proc/self/fd/<dfd>/<name>, which costs more than twice as
// much (4.7 against 1.9 µs an entry here: a tenth of an unchanged
// snapshot's time). Without /proc, p itself is read.
func readXattrs(dfd int, name, p string) (map[string][]byte, error) {
	return readXattrsVia(dfd, name, p, listxattrat, getxattrat, &noXattrat)
}

// readXattrsVia is readXattrs with the *xattrat calls given, and the flag
// that remembers that the kernel has none.
func readXattrsVia(dfd int, name, p string, lat func(int, string, []byte) (int, error),
	gat func(int, string, string, []byte) (int, error), none *atomic.Bool) (map[string][]byte, error) {
	beneath := name != "" && !strings.Contains(name, "/")
	refused := false
	if beneath && !none.Load() {
		out, err := readXattrsWith(p,
			func(buf []byte) (int, error) { return lat(dfd, name, buf) },
			func(xname string, val []byte) (int, error) { return gat(dfd, name, xname, val) })
		switch {
		case errors.Is(err, unix.ENOSYS):
			none.Store(true) // an older kernel, or a seccomp filter that says so
		case errors.Is(err, unix.EPERM):
			// A seccomp filter that does not know the calls may refuse
			// them so (systemd's SystemCallErrorNumber=EPERM): they are
			// given up if the older way reads what they were refused.
			refused = true
		default:
			return out, err
		}
	}
	at := p
	if beneath && haveProcFD() {
		at = procFD + "/" + strconv.Itoa(dfd) + "/" + name
	}
	out, err := readXattrsWith(p,
		func(buf []byte) (int, error) { return unix.Llistxattr(at, buf) },
		func(xname string, val []byte) (int, error) { return unix.Lgetxattr(at, xname, val) })
	if refused && err == nil {
		none.Store(true)
	}
	return out, err
}

// readXattrsWith reads the attributes that list names and get reads.
// An ENOSYS from list comes back as it is (from get, wrapped), so that
// the caller can try another way.
func readXattrsWith(p string, list func([]byte) (int, error), get func(string, []byte) (int, error)) (map[string][]byte, error) {
	buf := make([]byte, 1024)
	var n int
	var err error
	for {
		n, err = list(buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		break
	}
	switch {
	case errors.Is(err, unix.ENOSYS):
		return nil, err
	case errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.ENOENT):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("list extended attributes of %s: %w", p, err)
	case n == 0:
		return nil, nil
	}
	var out map[string][]byte
	for _, xname := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if !keptXattr(xname) {
			continue
		}
		val := make([]byte, 256)
		for {
			m, err := get(xname, val)
			if errors.Is(err, unix.ERANGE) {
				val = make([]byte, 2*len(val))
				continue
			}
			if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOENT) {
				break // removed meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("read extended attribute %s of %s: %w", xname, p, err)
			}
			if out == nil {
				out = map[string][]byte{}
			}
			out[xname] = bytes.Clone(val[:m])
			break
		}
	}
	return out, nil
}

// noXattrat is set once the kernel has answered ENOSYS to listxattrat.
var noXattrat atomic.Bool

// The *xattrat system calls of Linux 6.13, whose numbers are the same on
// every architecture (golang.org/x/sys has no wrapper for them yet).
const (
	sysGetxattrat  = 464
	sysListxattrat = 465
)

// listxattrat lists the attributes of name in the directory dfd, not
// following a symlink; buf must not be empty.
func listxattrat(dfd int, name string, buf []byte) (int, error) {
	pn, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	n, _, errno := unix.Syscall6(sysListxattrat, uintptr(dfd), uintptr(unsafe.Pointer(pn)), unix.AT_SYMLINK_NOFOLLOW,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// xattrArgs is the kernel's struct xattr_args.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// getxattrat reads the attribute xname of name in the directory dfd, not
// following a symlink; val must not be empty, and on the heap: its
// address travels inside a struct, where a stack that grows during the
// call would leave it stale (readXattrsWith's buffers escape: they are
// passed to a function value).
func getxattrat(dfd int, name, xname string, val []byte) (int, error) {
	pn, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	px, err := unix.BytePtrFromString(xname)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{value: uint64(uintptr(unsafe.Pointer(&val[0]))), size: uint32(len(val))}
	n, _, errno := unix.Syscall6(sysGetxattrat, uintptr(dfd), uintptr(unsafe.Pointer(pn)), unix.AT_SYMLINK_NOFOLLOW,
		uintptr(unsafe.Pointer(px)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(val)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func keptXattr(name string) bool {
	for _, p := range xattrPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// hasHolesAt reports whether the file name in the directory dfd has a
// hole before its end (SEEK_HOLE), which its restore keeps.
func hasHolesAt(dfd int, name string, size int64) bool {
	// Neither a symlink nor a FIFO put in the file's place since it was
	// listed is opened (a FIFO would block).
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	off, err := unix.Seek(fd, 0, unix.SEEK_HOLE)
	return err == nil && off < size
}

// owners says how a restore treats owners: restored (as root, for a
// version 2 tree) or not, and who restores.
type owners struct {
	restore  bool
	uid, gid uint32
	groups   map[uint32]bool
	root     bool // privileged: devices, security.* and trusted.* xattrs
}

func newOwners(t *tree, ignore bool) owners {
	o := owners{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), groups: map[uint32]bool{}}
	o.root = o.uid == 0
	o.restore = o.root && t.Version >= 2 && !ignore
	gs, _ := os.Getgroups()
	for _, g := range gs {
		o.groups[uint32(g)] = true
	}
	o.groups[o.gid] = true
	return o
}

// mode is the chmod argument for e: setuid is dropped unless the file
// ends up owned by its owner in the snapshot, setgid unless by its group
// (or, restored by its user, a group the restorer is in), so that a
// restore never makes a file set-ID to someone else. A version 1 tree
// recorded no owner: its set-ID bits are dropped from everything but
// directories (where setgid only passes the group on).
func (o owners) mode(t *tree, e *entry) uint32 {
	m := unixMode(e.Mode)
	if o.restore {
		return m
	}
	if e.Type == typeDir && t.Version < 2 {
		return m &^ unix.S_ISUID
	}
	if t.Version < 2 || e.UID != o.uid {
		m &^= unix.S_ISUID
	}
	if t.Version < 2 || (e.GID != o.gid && !(e.Type == typeDir || o.groups[e.GID])) {
		m &^= unix.S_ISGID
	}
	return m
}

// chown gives e its owner and group through fd (or, for a symlink, name
// in the directory fd), when owners are restored. It reports whether the
// owner was restored: a kernel that refuses (an ID not mapped in a user
// namespace, say) is warned about, and the caller then drops set-ID bits
// as for an ordinary user.
func (o owners) chown(fd int, name string, e *entry, warn func(string, ...any)) (bool, error) {
	if !o.restore {
		return false, nil
	}
	var err error
	if name != "" {
		err = unix.Fchownat(fd, name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW)
	} else {
		err = unix.Fchown(fd, int(e.UID), int(e.GID))
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
		warn("snapshot: restore %s: owner %d:%d not restored (%v); set-ID bits dropped", e.Path, e.UID, e.GID, err)
		return false, nil
	}
	return err == nil, err
}

// modeAs is mode for an entry whose owner was (owned) or was not restored.
func (o owners) modeAs(t *tree, e *entry, owned bool) uint32 {
	o.restore = owned
	return o.mode(t, e)
}

// setXattrs sets e's extended attributes on fd; those the restorer may
// not set (not root) are skipped, and a filesystem without them is
// reported once through warn.
func (o owners) setXattrs(fd int, e *entry, warn func(string, ...any)) error {
	names := make([]string, 0, len(e.Xattrs))
	for n := range e.Xattrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !keptXattr(n) || (!strings.HasPrefix(n, "user.") && !o.root) {
			continue
		}
		err := unix.Fsetxattr(fd, n, e.Xattrs[n], 0)
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
			warn("snapshot: restore %s: extended attribute %s not set: %v", e.Path, n, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("set extended attribute %s: %w", n, err)
		}
	}
	return nil
}

// writeSparse writes data at off, leaving holes where whole 4 KiB blocks
// of the file are zero.
func writeSparse(fd int, data []byte, off int64) error {
	const blk = 4096
	for len(data) > 0 {
		// Up to the next block boundary of the file.
		n := blk - int(off%blk)
		if n > len(data) {
			n = len(data)
		}
		if !allZero(data[:n]) {
			// Gather a run of non-zero blocks into one write.
			end := n
			for end < len(data) {
				m := min(blk, len(data)-end)
				if allZero(data[end : end+m]) {
					break
				}
				end += m
			}
			if err := pwriteAll(fd, data[:end], off); err != nil {
				return err
			}
			n = end
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
