package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
	"github.com/conveyorhq/conveyor/internal/snapshot"
	"github.com/conveyorhq/conveyor/internal/volume"
)

// snapshotEnv points the CLI at the shared test S3 server, a fresh bucket
// and a volume of the test's own.
func snapshotEnv(t *testing.T) (getenv func(string) string, vol string) {
	t.Helper()
	srv := s3test.Start(t)
	vol = filepath.Join(t.TempDir(), "volume")
	env := map[string]string{
		"CONVEYOR_S3_ENDPOINT":          srv.Endpoint,
		"CONVEYOR_S3_ACCESS_KEY_ID":     s3test.AccessKey,
		"CONVEYOR_S3_SECRET_ACCESS_KEY": s3test.SecretKey,
		"CONVEYOR_STATE_BUCKET":         srv.Bucket(t, "clisnap"),
		"CONVEYOR_VOLUME":               vol,
		"CONVEYOR_DATA_DIR":             t.TempDir(),
	}
	return func(k string) string { return env[k] }, vol
}

func runArgs(t *testing.T, getenv func(string) string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb, getenv)
	return out.String(), errb.String(), code
}

func TestSnapshotCommands(t *testing.T) {
	getenv, vol := snapshotEnv(t)
	if err := os.MkdirAll(filepath.Join(vol, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(vol, "logs", "a.log"), []byte("hello\n"), 0o644)

	out, errOut, code := runArgs(t, getenv, "snapshot", "create", "-o", "json", "--no-progress")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	var s snapshot.Snapshot
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Stats.Files != 1 {
		t.Fatalf("create output %q: %v", out, err)
	}
	out, _, code = runArgs(t, getenv, "snapshot", "list")
	if code != 0 || !strings.Contains(out, s.ID) {
		t.Fatalf("list: exit %d:\n%s", code, out)
	}
	to := filepath.Join(t.TempDir(), "r")
	if _, errOut, code := runArgs(t, getenv, "snapshot", "restore", s.ID[:10], "--to", to); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(to, "logs", "a.log")); string(b) != "hello\n" {
		t.Fatalf("restored %q", b)
	}
	if out, errOut, code := runArgs(t, getenv, "snapshot", "verify"); code != 0 || !strings.Contains(out, "no problem") {
		t.Fatalf("verify: exit %d: %s %s", code, out, errOut)
	}
	if out, errOut, code := runArgs(t, getenv, "snapshot", "prune", "--keep-last", "1"); code != 0 || !strings.Contains(out, "kept 1") {
		t.Fatalf("prune: exit %d: %s %s", code, out, errOut)
	}
}

// TestSnapshotRestoreToIsANewVolume: a copy restored with --to gets a volume
// ID of its own (a cloned worker must never pass for the original, whose
// running jobs name its ID), and no stale lock holders; --in-place keeps the
// ID.
func TestSnapshotRestoreToIsANewVolume(t *testing.T) {
	getenv, vol := snapshotEnv(t)
	v, err := volume.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := v.LockJob("0123456789abcdef0123456789abcdef") // a job running while the snapshot is taken
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	out, errOut, code := runArgs(t, getenv, "snapshot", "create", "-o", "json", "--no-progress")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	var s snapshot.Snapshot
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("create output %q: %v", out, err)
	}

	to := filepath.Join(t.TempDir(), "clone")
	out, errOut, code = runArgs(t, getenv, "snapshot", "restore", s.ID, "--to", to, "--no-progress")
	if code != 0 {
		t.Fatalf("restore --to: exit %d: %s", code, errOut)
	}
	clone, err := volume.Open(to)
	if err != nil {
		t.Fatal(err)
	}
	if clone.ID() == v.ID() {
		t.Fatalf("the clone kept the original's volume ID %s", v.ID())
	}
	if !strings.Contains(out, clone.ID()) {
		t.Errorf("restore output does not name the new ID %s:\n%s", clone.ID(), out)
	}
	if holders, _ := filepath.Glob(filepath.Join(to, "locks", "*.holder")); len(holders) != 0 {
		t.Errorf("the clone has the original's lock holders: %v", holders)
	}

	lock.Unlock()
	if _, errOut, code := runArgs(t, getenv, "snapshot", "restore", s.ID, "--in-place", "--no-progress"); code != 0 {
		t.Fatalf("restore --in-place: exit %d: %s", code, errOut)
	}
	same, err := volume.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	if same.ID() != v.ID() {
		t.Fatalf("restore --in-place changed the volume ID from %s to %s", v.ID(), same.ID())
	}
}

func TestSnapshotUsage(t *testing.T) {
	getenv, _ := snapshotEnv(t)
	bad := func(k, v string) func(string) string {
		return func(key string) string {
			if key == k {
				return v
			}
			return getenv(key)
		}
	}
	for _, tc := range []struct{ env, val, want string }{
		{"CONVEYOR_SNAPSHOT_DAILY", "3am", "HH:MM"},
		{"CONVEYOR_SNAPSHOT_EVERY", "5s", "at least"},
		{"CONVEYOR_SNAPSHOT_KEEP_LAST", "-1", "keep_last"},
		{"CONVEYOR_SNAPSHOT_QUIESCE", "maybe", "true or false"},
	} {
		_, errOut, code := runArgs(t, bad(tc.env, tc.val), "snapshot", "list")
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s=%s: exit %d, %q; want exit 2 mentioning %q", tc.env, tc.val, code, errOut, tc.want)
		}
	}
	if _, _, code := runArgs(t, getenv, "snapshot", "restore", "latest"); code != ExitUsage {
		t.Errorf("restore without --to or --in-place: exit %d, want 2", code)
	}
}
