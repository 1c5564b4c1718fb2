package volume

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// procStat reads a process's start time and state from /proc/<pid>/stat.
// The error wraps os.ErrNotExist when there is no such process.
func procStat(pid int) (start uint64, state byte, err error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, 0, err
	}
	// f[0] is field 3 of stat(5): the state; the start time is field 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	start, err = strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return start, f[0][0], nil
}

// statFields returns the fields of /proc/<pid>/stat after the command name,
// which may itself hold spaces and parentheses.
func statFields(pid int) ([][]byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return bytes.Fields(b[i+1:]), nil
}

// groupHoldsFile reports whether a process of group pgid has path open.
// Processes this user may not inspect are skipped.
func groupHoldsFile(pgid int, path string) bool {
	want, err := os.Stat(path)
	if err != nil {
		return false
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 3 || string(f[2]) != strconv.Itoa(pgid) {
			continue
		}
		dir := "/proc/" + p.Name() + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if fi, err := os.Stat(dir + fd.Name()); err == nil && os.SameFile(fi, want) {
				return true
			}
		}
	}
	return false
}
