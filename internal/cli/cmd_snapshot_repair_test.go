package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSnapshotDeleteAndRepairCommands(t *testing.T) {
	getenv, vol := snapshotEnv(t)
	os.MkdirAll(vol, 0o755)
	os.WriteFile(filepath.Join(vol, "a"), []byte("a"), 0o644)
	var ids []string
	for i := 0; i < 2; i++ {
		out, errOut, code := runArgs(t, getenv, "snapshot", "create", "--no-progress")
		if code != 0 {
			t.Fatalf("create: %s", errOut)
		}
		ids = append(ids, strings.Fields(out)[1][:len(strings.Fields(out)[1])-1])
	}
	if out, errOut, code := runArgs(t, getenv, "snapshot", "delete", ids[0]); code != 0 || !strings.Contains(out, "deleted snapshot "+ids[0]) {
		t.Fatalf("delete: exit %d: %s %s", code, out, errOut)
	}
	if out, _, _ := runArgs(t, getenv, "snapshot", "list"); strings.Contains(out, ids[0]) || !strings.Contains(out, ids[1]) {
		t.Fatalf("list after delete:\n%s", out)
	}
	if out, errOut, code := runArgs(t, getenv, "snapshot", "repair"); code != 0 || !strings.Contains(out, "every snapshot is complete") {
		t.Fatalf("repair: exit %d: %s %s", code, out, errOut)
	}
}

func TestSnapshotPruneDryRunAndVerifySubset(t *testing.T) {
	getenv, vol := snapshotEnv(t)
	os.MkdirAll(vol, 0o755)
	for i := 0; i < 2; i++ {
		os.WriteFile(filepath.Join(vol, "a"), []byte(strings.Repeat("a", i+1)), 0o644)
		if _, errOut, code := runArgs(t, getenv, "snapshot", "create", "--no-progress"); code != 0 {
			t.Fatalf("create: %s", errOut)
		}
	}
	out, errOut, code := runArgs(t, getenv, "snapshot", "prune", "--dry-run", "--keep-monthly", "1", "--keep-last", "1")
	if code != 0 || strings.Count(out, "would remove") != 1 || !strings.Contains(out, "dry run: would keep 1 snapshot(s), remove 1") {
		t.Fatalf("prune --dry-run: exit %d:\n%s%s", code, out, errOut)
	}
	if out, _, _ := runArgs(t, getenv, "snapshot", "list"); strings.Count(out, "\n") != 3 {
		t.Fatalf("a dry run removed a snapshot:\n%s", out)
	}
	if out, errOut, code := runArgs(t, getenv, "snapshot", "verify", "--read-data-subset", "1/2"); code != 0 || !strings.Contains(out, "no problem") {
		t.Fatalf("verify --read-data-subset: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := runArgs(t, getenv, "snapshot", "verify", "--read-data-subset", "3/2"); code == 0 || !strings.Contains(errOut, "n/m") {
		t.Fatalf("verify with a bad subset: exit %d: %s", code, errOut)
	}
}
