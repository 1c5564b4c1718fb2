package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReidentifyAtMount runs the boot script's identity step on a
// directory: a file system first mounted from another EBS volume (a clone
// or restore from a snapshot) loses its identity file and lock holders;
// the same volume, or one never marked, keeps them.
func TestReidentifyAtMount(t *testing.T) {
	t.Parallel()
	run := func(t *testing.T, dir, vol string) string {
		t.Helper()
		script := "set -euo pipefail\nvol='" + vol + "'\n" + strings.ReplaceAll(reidentifyScript, "@MOUNT@", dir)
		out, err := exec.Command("bash", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("script: %v\n%s", err, out)
		}
		return string(out)
	}
	volume := func(t *testing.T) string {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "locks"), 0o750)
		os.WriteFile(filepath.Join(dir, "volume-id"), []byte("abc\n"), 0o600)
		os.WriteFile(filepath.Join(dir, "locks", "j.holder"), nil, 0o600)
		return dir
	}
	kept := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, "volume-id"))
		return err == nil
	}
	marker := func(dir string) string {
		b, _ := os.ReadFile(filepath.Join(dir, ".ebs-volume-id"))
		return strings.TrimSpace(string(b))
	}

	dir := volume(t)
	run(t, dir, "vol-a") // first boot after the upgrade: marked, kept
	run(t, dir, "vol-a") // a reboot
	if !kept(dir) || marker(dir) != "vol-a" {
		t.Fatalf("same volume: identity kept %v, marker %q", kept(dir), marker(dir))
	}
	out := run(t, dir, "vol-clone") // the same data on another volume
	if kept(dir) || marker(dir) != "vol-clone" || !strings.Contains(out, "new volume identity") {
		t.Fatalf("clone: identity kept %v, marker %q, output %q", kept(dir), marker(dir), out)
	}
	if _, err := os.Stat(filepath.Join(dir, "locks", "j.holder")); err == nil {
		t.Fatal("clone: lock holder kept")
	}

	dir = volume(t)
	run(t, dir, "") // volume not found by the prelude: nothing done
	if !kept(dir) || marker(dir) != "" {
		t.Fatalf("unknown volume: identity kept %v, marker %q", kept(dir), marker(dir))
	}
}
