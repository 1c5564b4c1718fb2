package ssm_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	ssmdoc "github.com/conveyorhq/conveyor/deploy/ssm"
	"github.com/conveyorhq/conveyor/internal/job"
)

// document is the part of an SSM Command document this test reads.
type document struct {
	SchemaVersion string               `yaml:"schemaVersion"`
	Description   string               `yaml:"description"`
	Parameters    map[string]parameter `yaml:"parameters"`
	MainSteps     []struct {
		Action string `yaml:"action"`
		Name   string `yaml:"name"`
		Inputs struct {
			TimeoutSeconds string   `yaml:"timeoutSeconds"`
			RunCommand     []string `yaml:"runCommand"`
		} `yaml:"inputs"`
	} `yaml:"mainSteps"`
}

type parameter struct {
	Type              string  `yaml:"type"`
	Description       string  `yaml:"description"`
	Default           *string `yaml:"default"`
	AllowedPattern    string  `yaml:"allowedPattern"`
	InterpolationType string  `yaml:"interpolationType"`
}

const (
	volume    = "/var/lib/conveyor" // the data volume's mount point, in the document
	validID   = "0123456789abcdef0123456789abcdef"
	conveyor  = "/usr/local/bin/conveyor"
	jobRefPat = `\{\{\s*JobId\s*\}\}`
)

func parse(t *testing.T) document {
	t.Helper()
	var doc document
	dec := yaml.NewDecoder(bytes.NewReader(ssmdoc.Document))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("parse conveyor-run-job.yaml: %v", err)
	}
	return doc
}

func TestDocumentShape(t *testing.T) {
	t.Parallel()
	doc := parse(t)
	if doc.SchemaVersion != "2.2" || doc.Description == "" {
		t.Errorf("schemaVersion %q, description %q: want 2.2 and a description", doc.SchemaVersion, doc.Description)
	}
	def := "3600"
	want := map[string]parameter{
		"JobId":            {Type: "String", AllowedPattern: job.IDPattern, InterpolationType: "ENV_VAR"},
		"ExecutionTimeout": {Type: "String", Default: &def, AllowedPattern: `^[0-9]{1,5}$`},
	}
	for name, p := range doc.Parameters {
		if p.Description == "" {
			t.Errorf("parameter %s has no description", name)
		}
		p.Description = ""
		doc.Parameters[name] = p
	}
	if diff := cmp.Diff(want, doc.Parameters); diff != "" {
		t.Errorf("parameters (-want +got):\n%s", diff)
	}
	if len(doc.MainSteps) != 1 {
		t.Fatalf("%d mainSteps, want 1", len(doc.MainSteps))
	}
	step := doc.MainSteps[0]
	if step.Action != "aws:runShellScript" || step.Name != "runJob" || step.Inputs.TimeoutSeconds != "{{ ExecutionTimeout }}" {
		t.Errorf("step %s %s timeoutSeconds %q", step.Action, step.Name, step.Inputs.TimeoutSeconds)
	}
	if regexp.MustCompile(jobRefPat).Match(ssmdoc.Document) {
		t.Error("the document interpolates JobId: pass it only as SSM_JobId")
	}
	if n := strings.Count(script(doc), conveyor); n != 1 {
		t.Errorf("the script runs %s %d times, want once", conveyor, n)
	}
}

// hostile are job IDs that SSM must refuse; the script refuses them too
// when SSM is bypassed. DIR stands for a directory where a successful
// injection would leave a file.
var hostile = []string{
	"",
	"$(touch DIR/subst)",
	"`touch DIR/backtick`",
	validID + "; touch DIR/semicolon",
	validID + "\ntouch DIR/newline",
	validID + "\n",
	validID + " --config DIR/evil.yaml",
	"--config=DIR/evil.yaml",
	"../../../../etc/passwd",
	"../..",
	validID + "0",
	validID[:31],
	strings.ToUpper(validID),
	"0123456789abcdef0123456789abcdeg",
	"0123456789abcdef0123456789abcd\u00e9",
	"${IFS}touch${IFS}DIR/ifs",
	"*",
}

// The allowedPattern, checked as SSM checks parameters before sending,
// refuses every hostile ID and accepts a valid one.
func TestAllowedPatternRefusesHostileIDs(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(parse(t).Parameters["JobId"].AllowedPattern)
	if !re.MatchString(validID) {
		t.Errorf("allowedPattern refuses the valid ID %s", validID)
	}
	for _, id := range hostile {
		if re.MatchString(id) {
			t.Errorf("allowedPattern accepts %q", id)
		}
	}
}

// render does what the SSM agent does to the runShellScript step: it
// substitutes {{ Name }} references with parameter values. JobId travels
// only in the environment, so the script text must come out unchanged
// apart from ExecutionTimeout, which it does not reference either.
func render(t *testing.T, doc document, params map[string]string) (timeout, scriptText string) {
	t.Helper()
	sub := func(s string) string {
		for name, v := range params {
			s = regexp.MustCompile(`\{\{\s*`+regexp.QuoteMeta(name)+`\s*\}\}`).ReplaceAllLiteralString(s, v)
		}
		return s
	}
	text := script(doc)
	rendered := sub(text)
	if rendered != text {
		t.Errorf("rendering changed the script: a parameter is interpolated into shell text")
	}
	if strings.Contains(rendered, "{{") {
		t.Errorf("the script still holds a {{ }} reference after rendering")
	}
	return sub(doc.MainSteps[0].Inputs.TimeoutSeconds), rendered
}

// script is the runCommand lines as the agent writes them to a file.
func script(doc document) string {
	return strings.Join(doc.MainSteps[0].Inputs.RunCommand, "\n")
}

// shells are the shells the script must work under: /bin/sh is dash on
// Debian and Ubuntu, bash on Amazon Linux.
func shells(t *testing.T) []string {
	var out []string
	for _, sh := range []string{"/bin/sh", "/bin/bash", "/bin/dash", "/bin/busybox"} {
		if _, err := os.Stat(sh); err == nil {
			out = append(out, sh)
		}
	}
	if len(out) == 0 {
		t.Skip("no shell")
	}
	return out
}

// prepare writes the rendered script with conveyor replaced by a stub
// that records that it ran and prints its arguments one per line, and the
// data volume by /proc: a mount point on every Linux, not on the root
// filesystem (mount_test.go tests the volume's check with others).
func prepare(t *testing.T, scriptText string) (dir, scriptPath, ranMarker string) {
	return prepareVolume(t, scriptText, "/proc")
}

// prepareVolume is prepare with the data volume at vol.
func prepareVolume(t *testing.T, scriptText, vol string) (dir, scriptPath, ranMarker string) {
	dir = t.TempDir()
	stub := filepath.Join(dir, "conveyor-stub")
	ranMarker = filepath.Join(dir, "stub-ran")
	stubText := "#!/bin/sh\ntouch '" + ranMarker + "'\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n"
	// No fork may copy the write descriptor while the executables are
	// written: a child holding it makes exec fail with "text file busy".
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	if err := os.WriteFile(stub, []byte(stubText), 0o755); err != nil {
		t.Fatal(err)
	}
	scriptPath = filepath.Join(dir, "_script.sh")
	scriptText = strings.ReplaceAll(scriptText, "vol="+volume+"\n", "vol="+vol+"\n")
	if err := os.WriteFile(scriptPath, []byte(strings.ReplaceAll(scriptText, conveyor, stub)), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, scriptPath, ranMarker
}

func run(sh, scriptPath string, env ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(sh, scriptPath)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func TestScriptRunsTheWorker(t *testing.T) {
	t.Parallel()
	doc := parse(t)
	timeout, text := render(t, doc, map[string]string{"JobId": validID, "ExecutionTimeout": "7200"})
	if timeout != "7200" {
		t.Errorf("timeoutSeconds renders to %q, want 7200", timeout)
	}
	for _, sh := range shells(t) {
		_, scriptPath, ran := prepare(t, text)
		stdout, stderr, err := run(sh, scriptPath, "SSM_JobId="+validID)
		if err != nil {
			t.Fatalf("%s: script failed: %v\n%s", sh, err, stderr)
		}
		want := []string{"worker", "run", "--job", validID, "--config", "/etc/conveyor/conveyor.yaml", "--volume", "/proc"}
		if diff := cmp.Diff(want, strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")); diff != "" {
			t.Errorf("%s: conveyor argv (-want +got):\n%s", sh, diff)
		}
		if _, err := os.Stat(ran); err != nil {
			t.Errorf("%s: the stub did not run", sh)
		}
	}
}

// With allowedPattern bypassed, the script itself refuses every hostile
// value: it exits non-zero, conveyor never runs, nothing is injected.
func TestScriptRefusesHostileIDs(t *testing.T) {
	t.Parallel()
	doc := parse(t)
	_, text := render(t, doc, map[string]string{"ExecutionTimeout": "3600"})
	for _, sh := range shells(t) {
		for _, tmpl := range append(hostile, "<unset>") {
			dir, scriptPath, ran := prepare(t, text)
			var env []string
			if tmpl != "<unset>" {
				env = []string{"SSM_JobId=" + strings.ReplaceAll(tmpl, "DIR", dir)}
			}
			stdout, stderr, err := run(sh, scriptPath, env...)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Errorf("%s: SSM_JobId=%q: script exited %v, want a non-zero exit\nstdout: %s", sh, tmpl, err, stdout)
			}
			if !strings.Contains(stderr, "conveyor:") {
				t.Errorf("%s: SSM_JobId=%q: stderr %q does not explain the refusal", sh, tmpl, stderr)
			}
			if _, err := os.Stat(ran); err == nil {
				t.Errorf("%s: SSM_JobId=%q: conveyor ran", sh, tmpl)
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if name := e.Name(); name != "conveyor-stub" && name != "_script.sh" && name != "stub-ran" {
					t.Errorf("%s: SSM_JobId=%q: %s was created", sh, tmpl, name)
				}
			}
		}
	}
}
