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
