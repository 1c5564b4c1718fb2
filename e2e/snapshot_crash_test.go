package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSnapshotCrashSeam: the conveyor binary honours the crash seam
// (CONVEYOR_SNAPSHOT_CRASH_AT): create, prune and repair killed by it
// after a write step, then what a user runs: `snapshot verify` is clean
// (the dead process's lock is removed as stale), the command run again
// completes, verify is clean, and the latest snapshot restores equal to
// the volume. Every point is covered by the engine's own
// TestCrashAtEveryWriteStep; this shows the seam and the recovery through
// the commands.
func TestSnapshotCrashSeam(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})
	vol := filepath.Join(up.DataDir, "volume")
	a := randomFile(t, filepath.Join(vol, "data", "a.bin"), 1<<20)
	snapCLI(t, up.DataDir, "create")
	b := randomFile(t, filepath.Join(vol, "data", "b.bin"), 2<<20)

	killedAt := func(point string, args ...string) {
		t.Helper()
		cmd := exec.Command(conveyorBin, append(append([]string{"snapshot"}, args...), "--data-dir", up.DataDir, "--no-progress")...)
		cmd.Env = cleanEnv("CONVEYOR_SNAPSHOT_CRASH_AT=" + point)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("snapshot %v with the crash seam at %s: %v, want killed\n%s", args, point, err, out.String())
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("snapshot %v: %v, want killed by SIGKILL\n%s", args, err, out.String())
		}
		if !strings.Contains(out.String(), "crash point "+point+":1 reached") {
			t.Fatalf("snapshot %v killed, but not at %s:\n%s", args, point, out.String())
		}
		if locks := listKeys(t, up.S3, stateBucket, "snapshots/locks/"); len(locks) == 0 && !strings.HasSuffix(point, "/lock-released") {
			t.Fatalf("no lock left by the killed %v: the kill was not where it says", args)
		}
	}
	checkRestore := func() {
		t.Helper()
		to := filepath.Join(t.TempDir(), "restored")
		snapCLI(t, up.DataDir, "restore", "latest", "--to", to)
		mustEqualFile(t, filepath.Join(to, "data", "a.bin"), a)
		if b != nil {
			mustEqualFile(t, filepath.Join(to, "data", "b.bin"), b)
		} else if _, err := os.Stat(filepath.Join(to, "data", "b.bin")); !os.IsNotExist(err) {
			t.Fatalf("b.bin in the latest snapshot although removed before it: %v", err)
		}
	}

	killedAt("create/index", "create")
	snapCLI(t, up.DataDir, "verify")
	snapCLI(t, up.DataDir, "create")
	snapCLI(t, up.DataDir, "verify")
	checkRestore()

	os.Remove(filepath.Join(vol, "data", "b.bin"))
	b = nil
	snapCLI(t, up.DataDir, "create")
	killedAt("prune/pack-deleted", "prune", "--keep-last", "1")
	snapCLI(t, up.DataDir, "verify")
	snapCLI(t, up.DataDir, "prune", "--keep-last", "1")
	var list []snapshotJSON
	if err := json.Unmarshal([]byte(snapCLI(t, up.DataDir, "list", "-o", "json")), &list); err != nil || len(list) != 1 {
		t.Fatalf("after prune --keep-last 1: %v %+v, want one snapshot", err, list)
	}
	snapCLI(t, up.DataDir, "verify")
	checkRestore()

	killedAt("repair/index", "repair")
	snapCLI(t, up.DataDir, "verify")
	snapCLI(t, up.DataDir, "repair")
	snapCLI(t, up.DataDir, "verify")
	checkRestore()
	if locks := listKeys(t, up.S3, stateBucket, "snapshots/locks/"); len(locks) != 0 {
		t.Fatalf("locks left: %v", locks)
	}
}
