package ebs

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// fleet is a group of two workers (one in service, one stopped in the
// warm pool), each with its data volume, and DLM snapshots of both.
func fleet(t *testing.T) (*Driver, *ssmtest.Server, *bytes.Buffer) {
	t.Helper()
	dataTags := map[string]string{"Backup": "True", "Name": "conveyor-data", "aws:cloudformation:stack-name": "c"}
	snapTags := map[string]string{"Backup": "True", "Name": "conveyor-data", "dlm:managed": "true", "conveyor:snapshot": "dlm-daily"}
	day := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	srv := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{
			{ID: "i-0a", State: "running", Ping: "Online", AZ: "us-east-1b", StartLatency: time.Millisecond},
			{ID: "i-0b", State: "stopped", AZ: "us-east-1c"},
		},
		Group: &ssmtest.Group{Name: "c-workers", Min: 0, Max: 4, InService: []string{"i-0a"}, Warm: []string{"i-0b"}},
		Volumes: []ssmtest.Volume{
			{ID: "vol-a", AZ: "us-east-1b", Size: 20, Instance: "i-0a", Device: "/dev/sdf", Encrypted: true, Type: "gp3", Tags: dataTags},
			{ID: "vol-b", AZ: "us-east-1c", Size: 8, Instance: "i-0b", Device: "/dev/sdf", Encrypted: true, Type: "gp3", Tags: dataTags},
			{ID: "vol-root", AZ: "us-east-1b", Instance: "i-0a", Device: "/dev/xvda"},
		},
		Snapshots: []ssmtest.Snapshot{
			{ID: "snap-a1", Volume: "vol-a", Start: day, Size: 8, Tags: snapTags},
			{ID: "snap-b1", Volume: "vol-b", Start: day.Add(time.Minute), Tags: snapTags},
			{ID: "snap-gone", Volume: "vol-gone", Start: day.Add(-24 * time.Hour), Tags: snapTags},
			{ID: "snap-other", Volume: "vol-x", Start: day, Tags: map[string]string{"Backup": "False"}},
			{ID: "snap-a2", Volume: "vol-a", Start: day.Add(24 * time.Hour), State: "pending", Tags: snapTags},
		},
	})
	_, client := srv.Clients()
	var out bytes.Buffer
	d, err := New(client, Config{Poll: time.Millisecond, Timeout: 5 * time.Second, Out: &out, AutoScaling: srv.AutoScaling(), Group: "c-workers"})
	if err != nil {
		t.Fatal(err)
	}
	return d, srv, &out
}

func TestFleetListWithWorkers(t *testing.T) {
	t.Parallel()
	d, _, _ := fleet(t)
	ctx := context.Background()
	list, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids, vols []string
	for _, s := range list {
		ids = append(ids, s.ID+"/"+s.State)
		vols = append(vols, s.Source)
	}
	if diff := cmp.Diff([]string{"snap-gone/completed", "snap-a1/completed", "snap-b1/completed", "snap-a2/pending"}, ids); diff != "" {
		t.Fatalf("list (-want +got):\n%s", diff)
	}
	found, err := d.Volumes(ctx, vols)
	if err != nil {
		t.Fatal(err)
	}
	if found["vol-a"].Instance != "i-0a" || found["vol-b"].Instance != "i-0b" || len(found) != 2 {
		t.Fatalf("volumes %+v", found)
	}
}

func TestFleetRestoreInService(t *testing.T) {
	t.Parallel()
	d, srv, out := fleet(t)
	ctx := context.Background()
	w, err := d.ForWorker(ctx, "i-0a")
	if err != nil {
		t.Fatal(err)
	}
	if w.VolumeID() != "vol-a" {
		t.Fatalf("data volume of i-0a: %s", w.VolumeID())
	}
	if err := w.Restore(ctx, "snap-a1", snapshotRestore); err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, op := range srv.Ops() {
		if !strings.HasPrefix(op, "Describe") {
			acts = append(acts, op)
		}
	}
	want := []string{"EnterStandby", "StopInstances", "CreateVolume", "DetachVolume", "AttachVolume", "StartInstances", "ExitStandby"}
	if diff := cmp.Diff(want, acts); diff != "" {
		t.Fatalf("actions (-want +got):\n%s\n%s", diff, out)
	}
	vols := srv.Volumes()
	nv := vols[w.VolumeID()]
	wantTags := map[string]string{"Backup": "True", "Name": "conveyor-data", TagRestoredFrom: "snap-a1"}
	if diff := cmp.Diff(wantTags, nv.Tags); diff != "" {
		t.Errorf("new volume's tags (-want +got):\n%s", diff)
	}
	if nv.Instance != "i-0a" || nv.Device != "/dev/sdf" || nv.AZ != "us-east-1b" || !nv.Encrypted || nv.Type != "gp3" || nv.Size != 20 || nv.Snapshot != "snap-a1" {
		t.Errorf("new volume %+v", nv)
	}
	if old := vols["vol-a"]; old.Instance != "" || old.State != "available" {
		t.Errorf("old volume %+v, want detached and kept", old)
	}
	if srv.InStandby("i-0a") || srv.GroupState().Desired != 1 {
		t.Errorf("after restore: standby %v, desired %d", srv.InStandby("i-0a"), srv.GroupState().Desired)
	}
	if inst, _ := srv.Instance("i-0a"); inst.State == "stopped" || inst.State == "stopping" {
		t.Errorf("instance %s after restore", inst.State)
	}
}

func TestFleetRestoreWarmLeavesStopped(t *testing.T) {
	t.Parallel()
	d, srv, out := fleet(t)
	ctx := context.Background()
	w, err := d.ForWorker(ctx, "i-0b")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Restore(ctx, "snap-b1", snapshotRestore); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"EnterStandby", "StopInstances", "StartInstances", "ExitStandby"} {
		if slices.Contains(srv.Ops(), op) {
			t.Errorf("%s on a stopped warm-pool worker", op)
		}
	}
	if !strings.Contains(out.String(), "left stopped") {
		t.Errorf("output:\n%s", out)
	}
	if inst, _ := srv.Instance("i-0b"); inst.State != "stopped" {
		t.Errorf("warm worker %s", inst.State)
	}
}

func TestFleetRestoreRefuses(t *testing.T) {
	t.Parallel()
	d, srv, _ := fleet(t)
	ctx := context.Background()
	if _, err := d.ForWorker(ctx, "i-nope"); err == nil {
		t.Fatal("ForWorker of an instance with no data volume: no error")
	}
	w, _ := d.ForWorker(ctx, "i-0a")
	if err := w.Restore(ctx, "snap-a2", snapshotRestore); err == nil || !strings.Contains(err.Error(), "pending") {
		t.Fatalf("restore of a pending snapshot: %v", err)
	}
	if slices.Contains(srv.Ops(), "EnterStandby") || slices.Contains(srv.Ops(), "StopInstances") {
		t.Fatalf("a refused restore touched the worker: %v", srv.Ops())
	}
}

func TestFleetClone(t *testing.T) {
	t.Parallel()
	d, srv, _ := fleet(t)
	ctx := context.Background()
	v, err := d.Clone(ctx, "snap-a1", "")
	if err != nil {
		t.Fatal(err)
	}
	got := srv.Volumes()[v.ID]
	wantTags := map[string]string{"Backup": "True", "Name": "conveyor-data-clone", TagCloneOf: "snap-a1"}
	if diff := cmp.Diff(wantTags, got.Tags); diff != "" {
		t.Errorf("clone's tags (-want +got):\n%s", diff)
	}
	if v.State != "available" || v.AZ != "us-east-1b" || got.Instance != "" || !got.Encrypted {
		t.Errorf("clone %+v", got)
	}
	// Its volume gone, the zone must be given.
	if _, err := d.Clone(ctx, "snap-gone", ""); err == nil || !strings.Contains(err.Error(), "availability zone") {
		t.Fatalf("clone without a zone: %v", err)
	}
	if v, err := d.Clone(ctx, "snap-gone", "us-east-1c"); err != nil || v.AZ != "us-east-1c" {
		t.Fatalf("clone in us-east-1c: %+v, %v", v, err)
	}
	// Nothing of the workers changed.
	for _, op := range srv.Ops() {
		if op != "CreateVolume" && !strings.HasPrefix(op, "Describe") {
			t.Errorf("clone called %s", op)
		}
	}
}

var snapshotRestore = snapshot.RestoreOptions{}

// TestFleetRestoreFailureSaysWhatIsLeft: a failed attach leaves the worker
// stopped in Standby, the old volume detached and intact, and says so.
func TestFleetRestoreFailureSaysWhatIsLeft(t *testing.T) {
	t.Parallel()
	d, srv, _ := fleet(t)
	ctx := context.Background()
	w, _ := d.ForWorker(ctx, "i-0a")
	srv.SetFault(ssmtest.FailTimes("AttachVolume", -1, &ssmtest.Error{Status: 400, Code: "InvalidParameterValue", Message: "no"}))
	err := w.Restore(ctx, "snap-a1", snapshotRestore)
	if err == nil || !strings.Contains(err.Error(), "old volume vol-a is detached and intact") {
		t.Fatalf("restore with a failing attach: %v", err)
	}
	if old := srv.Volumes()["vol-a"]; old.State != "available" || old.Instance != "" {
		t.Errorf("old volume %+v", old)
	}
	if inst, _ := srv.Instance("i-0a"); inst.State != "stopped" || !srv.InStandby("i-0a") {
		t.Errorf("worker %s, standby %v: want stopped in Standby", inst.State, srv.InStandby("i-0a"))
	}
	if w.VolumeID() != "vol-a" {
		t.Errorf("driver's volume %s after a failed restore", w.VolumeID())
	}
}
