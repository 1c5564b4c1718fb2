package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With no password configured, the first snapshot command writes one in
// the data dir (0600) and says so loudly, once; the wrong password is a
// configuration error that says what to set; the password file setting
// and the variable both open the repository.
func TestSnapshotPassword(t *testing.T) {
	getenv, vol := snapshotEnv(t)
	os.MkdirAll(vol, 0o755)
	os.WriteFile(filepath.Join(vol, "f"), []byte("data"), 0o644)
	_, errOut, code := runArgs(t, getenv, "snapshot", "create", "--no-progress")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	file := filepath.Join(getenv("CONVEYOR_DATA_DIR"), SnapshotPasswordFile)
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("password file %s: %v, mode %v, want 0600", file, err, st)
	}
	if !strings.Contains(errOut, "Snapshots are encrypted with a password") || !strings.Contains(errOut, file) {
		t.Errorf("no loud notice of the generated password:\n%s", errOut)
	}
	if _, errOut, code := runArgs(t, getenv, "snapshot", "list"); code != 0 || strings.Contains(errOut, "Snapshots are encrypted with a password") {
		t.Fatalf("list with the generated password: exit %d: %s", code, errOut)
	}
	pw, _ := os.ReadFile(file)

	with := func(k, v string) func(string) string {
		return func(name string) string {
			if name == k {
				return v
			}
			return getenv(name)
		}
	}
	_, errOut, code = runArgs(t, with("CONVEYOR_SNAPSHOT_PASSWORD", "wrong"), "snapshot", "list")
	if code != ExitUsage || !strings.Contains(errOut, "does not open this repository's key") || !strings.Contains(errOut, "CONVEYOR_SNAPSHOT_PASSWORD") {
		t.Fatalf("wrong password: exit %d: %s", code, errOut)
	}
	if _, errOut, code := runArgs(t, with("CONVEYOR_SNAPSHOT_PASSWORD", strings.TrimSpace(string(pw))), "snapshot", "list"); code != 0 {
		t.Fatalf("password by variable: exit %d: %s", code, errOut)
	}
	moved := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(moved, pw, 0o600)
	os.Remove(file)
	if _, errOut, code := runArgs(t, with("CONVEYOR_SNAPSHOT_PASSWORD_FILE", moved), "snapshot", "list"); code != 0 {
		t.Fatalf("password file setting: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(file); err == nil {
		t.Error("a password was generated although snapshot.password_file is set")
	}
	_, errOut, code = runArgs(t, with("CONVEYOR_SNAPSHOT_PASSWORD_FILE", filepath.Join(t.TempDir(), "missing")), "snapshot", "list")
	if code != ExitUsage || !strings.Contains(errOut, "password_file") {
		t.Fatalf("missing password file: exit %d: %s", code, errOut)
	}
}
