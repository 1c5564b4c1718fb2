package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// resticTool drives restic with a local repository.
type resticTool struct{ bin, repo, vol string }

func (r *resticTool) name() string { return "restic" }

func (r *resticTool) cmd(args ...string) *exec.Cmd {
	c := exec.Command(r.bin, append([]string{"--repo", r.repo, "--quiet"}, args...)...)
	c.Env = append(os.Environ(), "RESTIC_PASSWORD=bench", "RESTIC_CACHE_DIR="+r.repo+"-cache")
	return c
}

func (r *resticTool) init() error {
	os.RemoveAll(r.repo)
	os.RemoveAll(r.repo + "-cache")
	_, err := runChild("restic init", r.cmd("init"))
	return err
}

func (r *resticTool) backup() (measure, error) {
	return runChild("restic backup", r.cmd("backup", r.vol))
}

func (r *resticTool) restore(target string) (measure, error) {
	m, err := runChild("restic restore", r.cmd("restore", "latest", "--target", target))
	if err != nil {
		return m, err
	}
	// restic restores the absolute path under the target.
	tmp := target + ".tmp"
	if err := os.Rename(filepath.Join(target, r.vol), tmp); err != nil {
		return m, err
	}
	os.RemoveAll(target)
	return m, os.Rename(tmp, target)
}

func (r *resticTool) prune() (measure, error) {
	return runChild("restic prune", r.cmd("forget", "--keep-last", "2", "--prune"))
}

func (r *resticTool) repoSize() int64 { return dirSize(r.repo) }
func (r *resticTool) clean()          { os.RemoveAll(r.repo); os.RemoveAll(r.repo + "-cache") }

// conveyorTool runs this binary's child mode: embedded S3 server and the
// snapshot engine in one process.
type conveyorTool struct {
	self, label, data, vol string
	workers                int
}

func (c *conveyorTool) name() string { return c.label }

func (c *conveyorTool) cmd(op string, args ...string) *exec.Cmd {
	a := []string{"child", "-op", op, "-data", c.data, "-vol", c.vol, "-workers", strconv.Itoa(c.workers)}
	return exec.Command(c.self, append(a, args...)...)
}

func (c *conveyorTool) init() error {
	os.RemoveAll(c.data)
	return os.MkdirAll(c.data, 0o755)
}

func (c *conveyorTool) run(name string, cmd *exec.Cmd) (measure, error) {
	var out strings.Builder
	cmd.Stdout = &out
	m, err := runChild(name, cmd)
	if err == nil && out.Len() > 0 {
		var res map[string]any
		if json.Unmarshal([]byte(out.String()), &res) == nil {
			if st, ok := res["stats"].(map[string]any); ok {
				fmt.Printf("  %s %-8s files read %v, added %.1f MB\n", c.label, strings.TrimPrefix(name, c.label+" "), st["files_read"], st["bytes_added"].(float64)/1e6)
			}
		}
	}
	return m, err
}

func (c *conveyorTool) backup() (measure, error) { return c.run(c.label+" create", c.cmd("create")) }
func (c *conveyorTool) restore(target string) (measure, error) {
	return c.run(c.label+" restore", c.cmd("restore", "-target", target))
}
func (c *conveyorTool) prune() (measure, error) { return c.run(c.label+" prune", c.cmd("prune")) }
func (c *conveyorTool) repoSize() int64         { return dirSize(c.data) }
func (c *conveyorTool) clean()                  { os.RemoveAll(c.data) }
