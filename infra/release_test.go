package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/google/go-cmp/cmp"
)

// The release manifest names each file the stack ships with its asset URL
// and hash; the association runs the update document on the workers with
// the manifest's digest, after the parameter is updated.
func TestRelease(t *testing.T) {
	c := synth.conveyor
	r := c.Worker.Release
	p := props(t, r.Parameter)
	if p["Name"] != "/conveyor/Conveyor/release" || p["Type"] != "String" {
		t.Errorf("release parameter %v", p)
	}
	url := func(key *string) string {
		return "{Sub:s3://cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}/" + *key + "}"
	}
	want := "binary " + url(c.Worker.Binary.S3ObjectKey()) + " " + fileSHA256(synth.props.WorkerBinary) + " \n" +
		"config " + url(c.Config.ConfigAsset.S3ObjectKey()) + " " + c.Config.ConfigSHA256 + " \n" +
		"bundle " + url(c.Config.BundleAsset.S3ObjectKey()) + " " + c.Config.BundleSHA256 + " " + c.Config.BundleArchive + "\n"
	if d := cmp.Diff(want, flatten(p["Value"])); d != "" {
		t.Errorf("release manifest (-want +got):\n%s", d)
	}

	a := resource(t, r.Association)
	ap := a["Properties"].(map[string]interface{})
	if d := cmp.Diff(plain(t, map[string]interface{}{
		"Name":            ref(logicalID(r.Document)),
		"AssociationName": "Conveyor-worker-update",
		"Targets":         []interface{}{map[string]interface{}{"Key": "tag:conveyor:role", "Values": []interface{}{"worker"}}},
		"Parameters":      map[string]interface{}{"Release": []interface{}{r.Digest}},
		"MaxConcurrency":  "50%",
		"MaxErrors":       "100%",
	}), ap); d != "" {
		t.Errorf("update association (-want +got):\n%s", d)
	}
	if !strings.Contains(flatten(a["DependsOn"]), logicalID(r.Parameter)) {
		t.Errorf("the association does not wait for the parameter: DependsOn %v", a["DependsOn"])
	}
	doc := flatten(props(t, r.Document)["Content"])
	for _, w := range []string{`"allowedPattern":"^[0-9a-f]{64}$"`, `"exec /usr/local/sbin/conveyor-install --drain"`, `"timeoutSeconds":3600`} {
		if !strings.Contains(doc, w) {
			t.Errorf("update document lacks %s: %s", w, doc)
		}
	}
}

// The boot script and conveyor-install are valid bash.
func TestBootScriptsParse(t *testing.T) {
	script := flatten(props(t, synth.conveyor.Worker.Instance)["UserData"])
	_, rest, _ := strings.Cut(script, "<<'CONVEYOR_INSTALL'\n")
	install, _, ok := strings.Cut(rest, "\nCONVEYOR_INSTALL\n")
	if !ok {
		t.Fatal("user data writes no conveyor-install")
	}
	dir := t.TempDir()
	for name, body := range map[string]string{"user-data": script, "conveyor-install": install} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
			t.Errorf("%s does not parse: %v\n%s", name, err, out)
		}
	}
}

// A deploy that changes only the worker binary changes the release (the
// parameter, the association's digest, the role's asset object) and
// nothing the instances are made from: the launch template, the group,
// the standalone instance, its volume and attachment are the same, user
// data included, so nothing is replaced, stopped or started.
func TestNewBinaryReplacesNothing(t *testing.T) {
	props := synth.props
	props.WorkerBinary = filepath.Join(t.TempDir(), "conveyor")
	if err := writeFile(props.WorkerBinary, "another build of the worker binary\n", 0o755); err != nil {
		t.Fatal(err)
	}
	if fileSHA256(props.WorkerBinary) == fileSHA256(synth.props.WorkerBinary) {
		t.Fatal("setup: the two binaries are the same")
	}
	app := newApp(filepath.Join(t.TempDir(), "cdk.out"))
	other := NewConveyorStack(app, "Conveyor", props)
	raw, err := json.Marshal(assertions.Template_FromStack(other.Stack, nil).ToJSON())
	if err != nil {
		t.Fatal(err)
	}
	var tmpl map[string]interface{}
	if err := json.Unmarshal(raw, &tmpl); err != nil {
		t.Fatal(err)
	}
	before := synth.json["Resources"].(map[string]interface{})
	after := tmpl["Resources"].(map[string]interface{})
	changed := map[string]bool{}
	for id, r := range before {
		if !cmp.Equal(r, after[id]) {
			changed[id] = true
		}
	}
	for id := range after {
		if before[id] == nil {
			t.Errorf("resource %s is new with the new binary", id)
		}
	}
	c := synth.conveyor
	for _, id := range []string{logicalID(c.Fleet.Template), logicalID(c.Fleet.Group), logicalID(c.Fleet.WarmPool),
		logicalID(c.Worker.Instance), logicalID(c.Worker.DataVolume), "DataVolumeAttachment"} {
		if changed[id] {
			t.Errorf("%s changes with the worker binary:\n%s", id, cmp.Diff(before[id], after[id]))
		}
	}
	// What does change: the release, and the asset the role may read.
	for _, id := range []string{logicalID(c.Worker.Release.Parameter), logicalID(c.Worker.Release.Association)} {
		if !changed[id] {
			t.Errorf("%s does not change with the worker binary: the running workers would not be updated", id)
		}
	}
	for id := range changed {
		switch id {
		case logicalID(c.Worker.Release.Parameter), logicalID(c.Worker.Release.Association):
		default:
			if before[id].(map[string]interface{})["Type"] != "AWS::IAM::Policy" {
				t.Errorf("%s (%v) changes with the worker binary", id, before[id].(map[string]interface{})["Type"])
			}
		}
	}
	ud := func(res map[string]interface{}, id string) interface{} {
		p := res[id].(map[string]interface{})["Properties"].(map[string]interface{})
		if d, ok := p["LaunchTemplateData"].(map[string]interface{}); ok {
			return d["UserData"]
		}
		return p["UserData"]
	}
	for _, id := range []string{logicalID(c.Fleet.Template), logicalID(c.Worker.Instance)} {
		if ud(before, id) == nil || !cmp.Equal(ud(before, id), ud(after, id)) {
			t.Errorf("%s: user data differs (or is missing) with a new binary", id)
		}
	}
}
