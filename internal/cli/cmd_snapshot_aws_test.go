package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
)

// TestSnapshotOnTheStack: with --stack, snapshot list shows the workers'
// DLM snapshots (by the stack's backup tag) with their volume and worker,
// and snapshot restore gives a worker of the group a new volume (through
// Standby) or makes a clone, against fake CloudFormation, EC2 and Auto
// Scaling endpoints speaking the real protocols.
func TestSnapshotOnTheStack(t *testing.T) {
	t.Parallel()
	tags := map[string]string{"Retain": "yes", "Name": "conveyor-data"}
	snapTags := map[string]string{"Retain": "yes", "Name": "conveyor-data", "dlm:managed": "true"}
	day := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	srv := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{{ID: "i-0a", State: "running", Ping: "Online", StartLatency: time.Millisecond}},
		Group:     &ssmtest.Group{Name: "C-workers", Max: 2, InService: []string{"i-0a"}},
		Volumes:   []ssmtest.Volume{{ID: "vol-a", Size: 8, Instance: "i-0a", Device: "/dev/sdf", Encrypted: true, Tags: tags}},
		Snapshots: []ssmtest.Snapshot{
			{ID: "snap-a1", Volume: "vol-a", Start: day, Tags: snapTags},
			{ID: "snap-old", Volume: "vol-gone", Start: day.Add(-24 * time.Hour), Tags: snapTags},
			{ID: "snap-else", Volume: "vol-x", Start: day, Tags: map[string]string{"Backup": "True"}},
		},
	})
	cf := ssmtest.NewCloudFormation(t, ssmtest.Stack{Name: "C",
		Outputs:    map[string]string{"WorkerGroupName": "C-workers"},
		Parameters: map[string]string{"BackupTagKey": "Retain", "BackupTagValue": "yes"},
	})
	env := map[string]string{
		"AWS_ENDPOINT_URL_CLOUDFORMATION": cf.URL,
		"AWS_ENDPOINT_URL_EC2":            srv.URL,
		"AWS_ENDPOINT_URL_AUTO_SCALING":   srv.URL,
		"CONVEYOR_S3_ACCESS_KEY_ID":       ssmtest.DefaultAccessKey,
		"CONVEYOR_S3_SECRET_ACCESS_KEY":   "secret",
		"CONVEYOR_S3_REGION":              ssmtest.DefaultRegion,
		"CONVEYOR_DATA_DIR":               t.TempDir(),
		"CONVEYOR_EBS_POLL":               "1ms",
	}
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return runArgs(t, func(k string) string { return env[k] }, append([]string{"--stack", "C", "snapshot"}, args...)...)
	}

	out, errOut, code := run("list")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "snap-old") || !strings.Contains(lines[1], "- (volume deleted)") ||
		!strings.HasPrefix(lines[2], "snap-a1") || !strings.Contains(lines[2], "vol-a") || !strings.Contains(lines[2], "i-0a") || !strings.Contains(lines[2], "completed") {
		t.Fatalf("list:\n%s", out)
	}
	out, _, _ = run("list", "-o", "json")
	var list []awsSnapshot
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 || list[1].Worker != "i-0a" || list[1].Stats.Bytes != 8<<30 {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}

	if _, errOut, code := run("restore", "snap-a1"); code != ExitUsage || !strings.Contains(errOut, "--worker") {
		t.Errorf("restore without --worker or --clone: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run("restore", "snap-a1", "--to", t.TempDir()); code != ExitUsage {
		t.Errorf("restore --to with --stack: exit %d: %s", code, errOut)
	}

	out, errOut, code = run("restore", "snap-a1", "--worker", "i-0a")
	if code != 0 {
		t.Fatalf("restore --worker: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "the old one, vol-a, is detached and kept") || !strings.Contains(errOut, "Standby") {
		t.Errorf("restore --worker: %s\n%s", out, errOut)
	}
	for id, v := range srv.Volumes() {
		switch {
		case id == "vol-a" && v.Instance != "":
			t.Errorf("old volume still attached: %+v", v)
		case id != "vol-a" && (v.Instance != "i-0a" || v.Tags["Retain"] != "yes" || v.Tags["conveyor:restored-from"] != "snap-a1"):
			t.Errorf("new volume %+v", v)
		}
	}

	out, errOut, code = run("restore", "snap-old", "--clone", "--az", "us-east-1c")
	if code != 0 || !strings.Contains(out, "new volume identity") {
		t.Fatalf("restore --clone: exit %d: %s\n%s", code, errOut, out)
	}
	if n := len(srv.Volumes()); n != 3 {
		t.Errorf("%d volumes after the clone, want 3", n)
	}
	if _, errOut, code := run("restore", "snap-nope", "--clone", "--az", "us-east-1c"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Errorf("restore of an unknown snapshot: exit %d: %s", code, errOut)
	}
}
