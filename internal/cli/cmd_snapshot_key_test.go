package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// 'snapshot key passwd' changes the generated password in place (the data
// dir's file gets the new one, and the old one no longer opens); 'key add'
// and 'key remove' manage a second password; the key in use is kept.
func TestSnapshotKeyCommands(t *testing.T) {
	getenv, vol := snapshotEnv(t)
	os.MkdirAll(vol, 0o755)
	os.WriteFile(filepath.Join(vol, "f"), []byte("data"), 0o644)
	if _, errOut, code := runArgs(t, getenv, "snapshot", "create", "--no-progress"); code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	with := func(kv ...string) func(string) string {
		return func(name string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == name {
					return kv[i+1]
				}
			}
			return getenv(name)
		}
	}
	keys := func(env func(string) string) []map[string]any {
		t.Helper()
		out, errOut, code := runArgs(t, env, "snapshot", "key", "list", "-o", "json")
		if code != 0 {
			t.Fatalf("key list: exit %d: %s", code, errOut)
		}
		var ks []map[string]any
		if err := json.Unmarshal([]byte(out), &ks); err != nil {
			t.Fatalf("key list -o json: %v: %s", err, out)
		}
		return ks
	}
	if ks := keys(getenv); len(ks) != 1 || ks[0]["current"] != true || ks[0]["kind"] != "password" {
		t.Fatalf("keys: %v", ks)
	}
	out, _, _ := runArgs(t, getenv, "snapshot", "key", "list")
	if !strings.Contains(out, "IN USE") || !strings.Contains(out, "*") {
		t.Fatalf("key list table:\n%s", out)
	}

	file := filepath.Join(getenv("CONVEYOR_DATA_DIR"), SnapshotPasswordFile)
	old, _ := os.ReadFile(file)
	if _, errOut, code := runArgs(t, getenv, "snapshot", "key", "passwd"); code != ExitUsage || !strings.Contains(errOut, "CONVEYOR_SNAPSHOT_NEW_PASSWORD") {
		t.Fatalf("passwd without a new secret: exit %d: %s", code, errOut)
	}
	out, errOut, code := runArgs(t, with("CONVEYOR_SNAPSHOT_NEW_PASSWORD", "the new password"), "snapshot", "key", "passwd")
	if code != 0 || !strings.Contains(out, "wrote the new password to "+file) {
		t.Fatalf("passwd: exit %d: %s%s", code, out, errOut)
	}
	if b, _ := os.ReadFile(file); string(b) != "the new password\n" {
		t.Fatalf("password file after passwd: %q", b)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Fatalf("password file mode %v", st.Mode())
	}
	if _, errOut, code := runArgs(t, getenv, "snapshot", "list"); code != 0 {
		t.Fatalf("list with the new password: exit %d: %s", code, errOut)
	}
	_, errOut, code = runArgs(t, with("CONVEYOR_SNAPSHOT_PASSWORD", strings.TrimSpace(string(old))), "snapshot", "list")
	if code != ExitUsage || !strings.Contains(errOut, "does not open") {
		t.Fatalf("list with the old password: exit %d: %s", code, errOut)
	}

	second := filepath.Join(t.TempDir(), "second")
	os.WriteFile(second, []byte("second password\nignored\n"), 0o600)
	out, errOut, code = runArgs(t, getenv, "snapshot", "key", "add", "--new-password-file", second)
	if code != 0 || !strings.Contains(out, "added key") {
		t.Fatalf("key add: exit %d: %s%s", code, out, errOut)
	}
	ks := keys(getenv)
	if len(ks) != 2 {
		t.Fatalf("keys after add: %v", ks)
	}
	if _, errOut, code := runArgs(t, with("CONVEYOR_SNAPSHOT_PASSWORD", "second password"), "snapshot", "list"); code != 0 {
		t.Fatalf("list with the second password: exit %d: %s", code, errOut)
	}
	var current, other string
	for _, k := range ks {
		if k["current"] == true {
			current = k["id"].(string)
		} else {
			other = k["id"].(string)
		}
	}
	if _, errOut, code := runArgs(t, getenv, "snapshot", "key", "remove", current); code == 0 || !strings.Contains(errOut, "opened the repository with") {
		t.Fatalf("remove the key in use: exit %d: %s", code, errOut)
	}
	if out, errOut, code := runArgs(t, getenv, "snapshot", "key", "remove", other); code != 0 || !strings.Contains(out, "removed key "+other) {
		t.Fatalf("remove the second key: exit %d: %s%s", code, out, errOut)
	}
	if _, _, code := runArgs(t, with("CONVEYOR_SNAPSHOT_PASSWORD", "second password"), "snapshot", "list"); code != ExitUsage {
		t.Fatalf("list with the removed second password: exit %d", code)
	}
	if ks := keys(getenv); len(ks) != 1 || ks[0]["id"] != current {
		t.Fatalf("keys after remove: %v", ks)
	}
}
