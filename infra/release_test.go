package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
	policy := logicalID(c.Worker.AssetsPolicy)
	if deps := flatten(a["DependsOn"]); !strings.Contains(deps, logicalID(r.Parameter)) || !strings.Contains(deps, policy) {
		t.Errorf("the association does not wait for the parameter and the worker's policy (%s): DependsOn %v", policy, a["DependsOn"])
	}
	doc := flatten(props(t, r.Document)["Content"])
	for _, w := range []string{`"allowedPattern":"^[0-9a-f]{64}$"`, `"cloud-init status --wait `, `"exec /usr/local/sbin/conveyor-install --drain"`, `"timeoutSeconds":3600`} {
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

// conveyor-install as the update runs it, on a directory standing for the
// machine, with fake aws and systemctl commands: it installs a release at
// boot; an update finds nothing to do when the release is installed; an
// update with a new binary drains first (watch stopped, the mark while the
// running job finishes), installs, then returns the worker to service; a
// file whose hash is not the release's is never installed.
func TestInstallScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	script := flatten(props(t, synth.conveyor.Worker.Instance)["UserData"])
	_, rest, _ := strings.Cut(script, "<<'CONVEYOR_INSTALL'\n")
	install, _, _ := strings.Cut(rest, "\nCONVEYOR_INSTALL\n")
	dir := t.TempDir()
	root := func(p string) string { return filepath.Join(dir, "root", p) }
	install = regexp.MustCompile(`\{Ref:([\w:]+)\}`).ReplaceAllStringFunc(install, func(m string) string {
		return strings.ToLower(strings.NewReplacer(":", "-").Replace(strings.Trim(m, "{}")[4:]))
	})
	install = strings.NewReplacer(
		"/usr/local/bin/", root("usr/local/bin")+"/",
		"/etc/conveyor", root("etc/conveyor"),
		VolumeMountPoint, root("var/lib/conveyor"),
		WorkerMachineDir, root("opt/conveyor"),
		"/run/conveyor-install.lock", root("conveyor-install.lock"),
	).Replace(install)
	for _, d := range []string{"usr/local/bin", "etc/conveyor", "var/lib/conveyor/runs", "opt/conveyor/bundles"} {
		if err := os.MkdirAll(root(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	installer := filepath.Join(dir, "conveyor-install")
	must(t, os.WriteFile(installer, []byte(install), 0o755))

	// Fakes: aws reads the release from $RELEASE and copies assets from
	// local paths; systemctl logs its calls (the watch is active).
	fake := filepath.Join(dir, "fakebin")
	log := filepath.Join(dir, "calls.log")
	must(t, writeFile(filepath.Join(fake, "aws"), `#!/bin/bash
case "$1 $2" in
  "ssm get-parameter") cat "$RELEASE" ;;
  "s3 cp") cp "$3" "$4" ;;
  *) echo "fake aws: $*" >&2; exit 2 ;;
esac
`, 0o755))
	must(t, writeFile(filepath.Join(fake, "systemctl"), `#!/bin/bash
echo "systemctl $*" >> "$CALLS"
[ "$1" = is-active ] && exit 0
exit 0
`, 0o755))
	// The worker binary: prepare notes whether the mark is there and
	// whether the running job has ended.
	binary := func(version string) string {
		return `#!/bin/bash
echo "conveyor ` + version + ` $1 $2 draining=$([ -e '` + root("var/lib/conveyor/draining") + `' ] && echo yes || echo no) job=$(cat '` + filepath.Join(dir, "job") + `' 2>/dev/null)" >> "$CALLS"
`
	}
	asset := func(name, content string) (string, string) {
		p := filepath.Join(dir, "assets", name)
		must(t, writeFile(p, content, 0o644))
		return p, fileSHA256(p)
	}
	archive := root("opt/conveyor/bundles/b.zip")
	release := func(bin string, badSHA bool) string {
		b, bs := asset("bin-"+bin, binary(bin))
		c, cs := asset("config", "processor: {bundle: "+archive+"}\n")
		z, zs := asset("bundle", "zip bytes")
		if badSHA {
			bs = strings.Repeat("0", 64)
		}
		p := filepath.Join(dir, "release-"+bin)
		must(t, os.WriteFile(p, []byte("binary "+b+" "+bs+" \nconfig "+c+" "+cs+" \nbundle "+z+" "+zs+" "+archive+"\n"), 0o644))
		return p
	}
	run := func(rel string, args ...string) (string, error) {
		os.Remove(log)
		cmd := exec.Command("bash", append([]string{installer}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+fake+":"+os.Getenv("PATH"), "RELEASE="+rel, "CALLS="+log)
		out, err := cmd.CombinedOutput()
		calls, _ := os.ReadFile(log)
		return string(out) + string(calls), err
	}

	// At boot: everything installed, the configuration written, prepared.
	v1 := release("v1", false)
	out, err := run(v1)
	if err != nil || !strings.Contains(out, "conveyor v1 worker prepare draining=no") || strings.Contains(out, "systemctl stop") {
		t.Fatalf("boot install: %v\n%s", err, out)
	}
	cfg, _ := os.ReadFile(root("etc/conveyor/conveyor.yaml"))
	if !strings.HasPrefix(string(cfg), "s3: {aws: true, region: aws--region}\n") || !strings.HasSuffix(string(cfg), "processor: {bundle: "+archive+"}\n") {
		t.Errorf("configuration written:\n%s", cfg)
	}
	if b, _ := os.ReadFile(archive); string(b) != "zip bytes" {
		t.Errorf("bundle archive %q", b)
	}

	// An update with the release installed: nothing to do, no drain.
	if out, err := run(v1, "--drain"); err != nil || !strings.Contains(out, "the current release is installed") || strings.Contains(out, "systemctl stop") {
		t.Errorf("update with nothing new: %v\n%s", err, out)
	}

	// An update with a new binary while a job runs: drained, the job
	// finished before the install, back in service after.
	job := exec.Command("bash", "-c", "sleep 3; echo finished > "+filepath.Join(dir, "job"))
	must(t, job.Start())
	must(t, os.WriteFile(root("var/lib/conveyor/runs/"+strconv.Itoa(job.Process.Pid)), []byte("holder"), 0o644))
	go job.Wait()
	out, err = run(release("v2", false), "--drain")
	if err != nil {
		t.Fatalf("update: %v\n%s", err, out)
	}
	stop, prep, start := strings.Index(out, "systemctl stop conveyor-watch"), strings.Index(out, "conveyor v2 worker prepare draining=yes job=finished"), strings.Index(out, "systemctl start conveyor-watch")
	if stop < 0 || prep < stop || start < prep {
		t.Errorf("update: want the watch stopped, the release installed while drained after the job ended, the watch started again:\n%s", out)
	}
	if _, err := os.Stat(root("var/lib/conveyor/draining")); err == nil {
		t.Error("the draining mark is left after the update")
	}

	// A binary whose hash is not the release's is not installed.
	out, err = run(release("v3", true), "--drain")
	if err == nil || !strings.Contains(out, "does not have SHA-256") {
		t.Errorf("bad hash: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(root("usr/local/bin/conveyor")); !strings.Contains(string(b), "conveyor v2") {
		t.Errorf("the installed binary changed on a bad hash:\n%s", b)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
