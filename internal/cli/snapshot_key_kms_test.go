package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conveyorhq/conveyor/internal/snapshot/local/kmskey/kmstest"
)

// snapshot.kms_key wraps the repository's key with KMS instead of a
// password (none is generated); another key, a password beside it, or
// no key at all are errors that say what to set; a disabled key is said
// to be disabled.
func TestSnapshotKMSKey(t *testing.T) {
	const keyA, keyB = "1234abcd-12ab-34cd-56ef-1234567890ab", "0987dcba-09fe-87dc-65ba-ab0987654321"
	kms := kmstest.New(t, kmstest.Key{ID: keyA, Alias: "alias/snap"}, kmstest.Key{ID: keyB})
	// The usual AWS chain, made hermetic: the fake's credentials only.
	t.Setenv("AWS_ACCESS_KEY_ID", kmstest.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	base, vol := snapshotEnv(t)
	os.MkdirAll(vol, 0o755)
	os.WriteFile(filepath.Join(vol, "f"), []byte("data"), 0o644)
	with := func(kv ...string) func(string) string {
		return func(name string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == name {
					return kv[i+1]
				}
			}
			return base(name)
		}
	}
	getenv := with("CONVEYOR_SNAPSHOT_KMS_KEY", "alias/snap", "AWS_ENDPOINT_URL_KMS", kms.URL)

	if _, errOut, code := runArgs(t, getenv, "snapshot", "create", "--no-progress"); code != 0 {
		t.Fatalf("create with a KMS key: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(base("CONVEYOR_DATA_DIR"), SnapshotPasswordFile)); err == nil {
		t.Error("a snapshot password was generated although snapshot.kms_key is set")
	}
	if calls := kms.Calls(); len(calls) == 0 || calls[0].Op != "Encrypt" || calls[0].KeyID != "alias/snap" {
		t.Fatalf("KMS calls %+v, want an Encrypt with alias/snap first", calls)
	}
	if _, errOut, code := runArgs(t, getenv, "snapshot", "list"); code != 0 {
		t.Fatalf("list with the KMS key: exit %d: %s", code, errOut)
	}

	_, errOut, code := runArgs(t, with("CONVEYOR_SNAPSHOT_KMS_KEY", keyB, "AWS_ENDPOINT_URL_KMS", kms.URL), "snapshot", "list")
	if code != ExitUsage || !strings.Contains(errOut, kmstest.ARN(keyA)) || !strings.Contains(errOut, "snapshot.kms_key") {
		t.Fatalf("another KMS key: exit %d: %s", code, errOut)
	}
	for _, both := range [][]string{
		{"CONVEYOR_SNAPSHOT_PASSWORD", "pw"},
		{"CONVEYOR_SNAPSHOT_PASSWORD_FILE", filepath.Join(t.TempDir(), "pw")},
	} {
		_, errOut, code := runArgs(t, with("CONVEYOR_SNAPSHOT_KMS_KEY", "alias/snap", "AWS_ENDPOINT_URL_KMS", kms.URL, both[0], both[1]), "snapshot", "list")
		if code != ExitUsage || !strings.Contains(errOut, "both set") {
			t.Fatalf("kms_key and %s: exit %d: %s", both[0], code, errOut)
		}
	}
	_, errOut, code = runArgs(t, with("CONVEYOR_SNAPSHOT_PASSWORD", "pw"), "snapshot", "list")
	if code != ExitUsage || !strings.Contains(errOut, "CONVEYOR_SNAPSHOT_KMS_KEY") {
		t.Fatalf("a password on a KMS repository: exit %d: %s", code, errOut)
	}
	kms.Set(keyA, func(k *kmstest.Key) { k.Disabled = true })
	_, errOut, code = runArgs(t, getenv, "snapshot", "list")
	if code == 0 || code == ExitUsage || !strings.Contains(errOut, "aws kms enable-key") {
		t.Fatalf("disabled key: exit %d: %s", code, errOut)
	}
}
