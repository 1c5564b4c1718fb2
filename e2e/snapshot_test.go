package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

type snapshotJSON struct {
	ID    string `json:"id"`
	Stats struct {
		Files      int   `json:"files"`
		BytesAdded int64 `json:"bytes_added"`
	} `json:"stats"`
}

func randomFile(t *testing.T, p string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
	return b
}

func snapCLI(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, append(append([]string{"snapshot"}, args...), "--data-dir", dataDir, "--no-progress")...)
	if code != 0 {
		t.Fatalf("conveyor snapshot %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

func mustEqualFile(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs (%d bytes, want %d)", p, len(got), len(want))
	}
}

// TestSnapshotLifecycle: create (quiesced), list, restore to a new
// directory, verify, prune against a running `conveyor up`; then restore in
// place once it is stopped.
func TestSnapshotLifecycle(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})
	vol := filepath.Join(up.DataDir, "volume")
	a := randomFile(t, filepath.Join(vol, "data", "a.bin"), 3<<20)
	if err := os.Symlink("a.bin", filepath.Join(vol, "data", "link")); err != nil {
		t.Fatal(err)
	}
	var first snapshotJSON
	if err := json.Unmarshal([]byte(snapCLI(t, up.DataDir, "create", "--quiesce", "-o", "json")), &first); err != nil {
		t.Fatal(err)
	}
	if first.ID == "" || first.Stats.BytesAdded < 3<<20 {
		t.Fatalf("first snapshot: %+v", first)
	}
	b := randomFile(t, filepath.Join(vol, "data", "b.bin"), 1<<20)
	snapCLI(t, up.DataDir, "create")

	var list []snapshotJSON
	if err := json.Unmarshal([]byte(snapCLI(t, up.DataDir, "list", "-o", "json")), &list); err != nil || len(list) != 2 {
		t.Fatalf("list: %v %+v", err, list)
	}
	if out := snapCLI(t, up.DataDir, "list"); !strings.Contains(out, first.ID) || !strings.Contains(out, "ADDED") {
		t.Fatalf("list table:\n%s", out)
	}
	to := filepath.Join(t.TempDir(), "clone")
	snapCLI(t, up.DataDir, "restore", "latest", "--to", to)
	mustEqualFile(t, filepath.Join(to, "data", "a.bin"), a)
	mustEqualFile(t, filepath.Join(to, "data", "b.bin"), b)
	if target, err := os.Readlink(filepath.Join(to, "data", "link")); err != nil || target != "a.bin" {
		t.Fatalf("symlink: %q %v", target, err)
	}
	snapCLI(t, up.DataDir, "verify")

	// In place needs the pipeline stopped.
	_, errOut, code := runCLI(t, "snapshot", "restore", first.ID, "--in-place", "--data-dir", up.DataDir)
	if code == 0 || !strings.Contains(errOut, "stop it first") {
		t.Fatalf("in-place restore with up running: exit %d, %s", code, errOut)
	}
	up.stop()
	snapCLI(t, up.DataDir, "restore", first.ID, "--in-place")
	mustEqualFile(t, filepath.Join(vol, "data", "a.bin"), a)
	if _, err := os.Stat(filepath.Join(vol, "data", "b.bin")); !os.IsNotExist(err) {
		t.Fatalf("b.bin after restoring the first snapshot in place: %v", err)
	}
	// Without `conveyor up`, the command opens the data dir itself.
	out := snapCLI(t, up.DataDir, "prune", "--keep-last", "1")
	if !strings.Contains(out, "removed 1") {
		t.Fatalf("prune: %s", out)
	}
}

// TestSnapshotCrash: kill -9 during create and during prune; verify passes,
// the earlier snapshot restores, and the next run completes.
func TestSnapshotCrash(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})
	vol := filepath.Join(up.DataDir, "volume")
	a := randomFile(t, filepath.Join(vol, "data", "a.bin"), 1<<20)
	var first snapshotJSON
	json.Unmarshal([]byte(snapCLI(t, up.DataDir, "create", "-o", "json")), &first)

	for i := 0; i < 6; i++ {
		randomFile(t, filepath.Join(vol, "data", "big", string(rune('a'+i))+".bin"), 10<<20)
	}
	// data is the repository but its locks: what a kill can damage.
	data := func() string {
		var keys []string
		for _, k := range listKeys(t, up.S3, stateBucket, "snapshots/") {
			if !strings.HasPrefix(k, "snapshots/locks/") {
				keys = append(keys, k)
			}
		}
		return strings.Join(keys, ",")
	}
	crash := func(what string, args ...string) {
		t.Helper()
		before := data()
		cmd := exec.Command(conveyorBin, append(append([]string{"snapshot"}, args...), "--data-dir", up.DataDir, "--no-progress")...)
		cmd.Env = cleanEnv()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		// Kill once it has changed the repository, not after a delay.
		deadline := time.Now().Add(jobTimeout)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				t.Logf("%s finished before the kill: %s", what, out.String())
				return
			default:
			}
			if data() != before {
				cmd.Process.Kill()
				<-exited
				t.Logf("%s killed mid-way", what)
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Fatalf("%s changed nothing within %s", what, jobTimeout)
	}
	crash("create", "create")
	snapCLI(t, up.DataDir, "verify")
	to := filepath.Join(t.TempDir(), "first")
	snapCLI(t, up.DataDir, "restore", first.ID, "--to", to)
	mustEqualFile(t, filepath.Join(to, "data", "a.bin"), a)
	snapCLI(t, up.DataDir, "create")

	os.RemoveAll(filepath.Join(vol, "data", "big"))
	snapCLI(t, up.DataDir, "create")
	crash("prune", "prune", "--keep-last", "1")
	snapCLI(t, up.DataDir, "verify")
	// Repair rewrites the index: killed in the middle, nothing is lost.
	crash("repair", "repair")
	snapCLI(t, up.DataDir, "verify")
	snapCLI(t, up.DataDir, "prune", "--keep-last", "1")
	snapCLI(t, up.DataDir, "verify")
	to = filepath.Join(t.TempDir(), "latest")
	snapCLI(t, up.DataDir, "restore", "latest", "--to", to)
	mustEqualFile(t, filepath.Join(to, "data", "a.bin"), a)
	// Nothing left behind: every pack is referenced by the index.
	out, err := up.S3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(stateBucket), Prefix: aws.String("snapshots/locks/")})
	if err != nil || len(out.Contents) != 0 {
		t.Fatalf("locks left: %v %v", out, err)
	}
}
