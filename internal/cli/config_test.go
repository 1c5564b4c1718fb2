package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "conveyor.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigPrecedence(t *testing.T) {
	path := writeFile(t, `
data_dir: /srv/conveyor
s3: {addr: "127.0.0.1:9100"}
processor: {name: zstd, timeout: 5m}
filter: {prefixes: [in/]}
workers: 3
retry: {max_attempts: 5, backoff: 1s}
`)
	c, err := loadConfig(path, env(map[string]string{
		"CONVEYOR_WORKERS":           "7",
		"CONVEYOR_FILTER_SUFFIXES":   ".csv, .pdf",
		"CONVEYOR_PROCESSOR_COMMAND": "/usr/bin/tool --fast",
		"CONVEYOR_S3_AWS":            "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/conveyor" || c.S3.Addr != "127.0.0.1:9100" || c.S3.Region != DefaultRegion {
		t.Errorf("file values or defaults lost: %+v", c)
	}
	if !c.S3.AWS {
		t.Error("CONVEYOR_S3_AWS=true not applied")
	}
	if c.Workers != 7 {
		t.Errorf("env must override the file: workers %d", c.Workers)
	}
	if c.Processor.Timeout != 5*time.Minute || c.Retry.MaxAttempts != 5 || c.Retry.Backoff != time.Second {
		t.Errorf("durations/numbers: %+v", c)
	}
	if diff := cmp.Diff([]string{".csv", ".pdf"}, c.Filter.Suffixes); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]string{"/usr/bin/tool", "--fast"}, c.Processor.Command); diff != "" {
		t.Error(diff)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		file string
		env  map[string]string
		want string
	}{
		{file: "workers: many\n", want: "conveyor.yaml"},
		{file: "wrokers: 2\n", want: "line 1: unknown setting wrokers;"},
		{file: "processor: {timeout: soon}\n", want: "line 1: cannot use `soon` as a duration"},
		{env: map[string]string{"CONVEYOR_PROCESSOR_TIMEOUT": "soon"}, want: "CONVEYOR_PROCESSOR_TIMEOUT"},
		{env: map[string]string{"CONVEYOR_WORKERS": "two"}, want: "CONVEYOR_WORKERS"},
		{env: map[string]string{"CONVEYOR_WORKER_LOG_MAX_BYTES": "lots"}, want: "CONVEYOR_WORKER_LOG_MAX_BYTES"},
		{file: "worker: {lease: soon}\n", want: "line 1: cannot use `soon` as a duration"},
	}
	for _, tt := range tests {
		path := ""
		if tt.file != "" {
			path = writeFile(t, tt.file)
		}
		_, err := loadConfig(path, env(tt.env))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("file %q env %v: err %v, want mention of %q", tt.file, tt.env, err, tt.want)
		}
		if code, _ := explain(err); err != nil && code != ExitUsage {
			t.Errorf("config error exit code %d, want %d", code, ExitUsage)
		}
	}
	c := defaultFileConfig()
	c.Buckets.Output = c.Buckets.Input
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "buckets.output") {
		t.Errorf("same input and output bucket: %v", err)
	}
	// The state bucket may not be the input or the output one: its records
	// would be processed as uploads, or mixed with results.
	for _, same := range []string{"input", "output"} {
		c = defaultFileConfig()
		c.Buckets.State = same
		err := c.validate()
		if code, _ := explain(err); err == nil || !strings.Contains(err.Error(), "buckets.state") || code != ExitUsage {
			t.Errorf("state bucket %q: %v (exit %d)", same, err, code)
		}
	}
	c = defaultFileConfig()
	c.Workers = 0
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "workers") {
		t.Errorf("zero workers: %v", err)
	}
}

func TestMissingExplicitConfigFile(t *testing.T) {
	if _, err := loadConfig(filepath.Join(t.TempDir(), "nope.yaml"), env(nil)); err == nil {
		t.Fatal("a config file named explicitly but missing must be an error")
	}
	// The implicit ./conveyor.yaml is optional.
	t.Chdir(t.TempDir())
	if _, err := loadConfig("", env(nil)); err != nil {
		t.Fatal(err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain/path-1.2": "plain/path-1.2",
		"with space":     "'with space'",
		"it's":           `'it'\''s'`,
		"$(reboot)":      "'$(reboot)'",
		"":               "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSafeJoin(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{"../x", "a/../../x", "/etc/passwd"} {
		if _, err := safeJoin(dir, bad); err == nil {
			t.Errorf("safeJoin(%q) escaped", bad)
		}
	}
	if p, err := safeJoin(dir, "a/b.txt"); err != nil || p != filepath.Join(dir, "a", "b.txt") {
		t.Errorf("safeJoin(a/b.txt) = %s, %v", p, err)
	}
}

func TestHelpDocumentsExitCodes(t *testing.T) {
	var out strings.Builder
	code := Run(t.Context(), []string{"--help"}, &out, &out, env(nil))
	if code != 0 || !strings.Contains(out.String(), "Exit codes") || !strings.Contains(out.String(), "3  a job ended dead") {
		t.Fatalf("help (exit %d):\n%s", code, out.String())
	}
	out.Reset()
	if code := Run(t.Context(), []string{"up", "--no-such-flag"}, &out, &out, env(nil)); code != ExitUsage {
		t.Errorf("unknown flag: exit %d, want %d (%s)", code, ExitUsage, out.String())
	}
	out.Reset()
	if code := Run(t.Context(), []string{"worker", "run", "--job", "$(reboot)"}, &out, &out, env(nil)); code != ExitUsage || !strings.Contains(out.String(), "not a job ID") {
		t.Errorf("bad job ID: exit %d: %s", code, out.String())
	}
}

// readmePath is resolved at start: tests that start the embedded S3 server
// change the working directory.
var readmePath, _ = filepath.Abs("../../README.md")

// The README's complete configuration example loads as it is, and sets
// every field the file format has (so the README cannot fall behind).
func TestREADMEConfigExample(t *testing.T) {
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## Configuration")
	_, rest, ok2 := strings.Cut(rest, "```yaml\n")
	block, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README has no yaml block under ## Configuration")
	}
	c, err := loadConfig(writeFile(t, block), env(nil))
	if err != nil {
		t.Fatalf("README example: %v", err)
	}
	if c.S3.Addr != DefaultS3Addr || c.Snapshot.Prefix != "snapshots/" || c.Dashboard.Addr != "127.0.0.1:9001" {
		t.Errorf("README example loaded as %+v", c)
	}
	// Every env var the loader knows is named in the README.
	for _, f := range envFields(&c) {
		if !strings.Contains(block, f.name) {
			t.Errorf("README's configuration example does not mention %s", f.name)
		}
	}
}

// Every setting documented with an env tag is read from the environment:
// a tag without its entry in envFields would be a variable that silently
// does nothing (it happened to four snapshot settings).
func TestEveryEnvTagIsRead(t *testing.T) {
	handled := map[string]bool{}
	for _, f := range envFields(&FileConfig{}) {
		handled[f.name] = true
	}
	var walk func(reflect.Type, string)
	n := 0
	walk = func(typ reflect.Type, path string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if env := f.Tag.Get("env"); env != "" {
				n++
				if !handled[env] {
					t.Errorf("%s%s has env:%q, which envFields does not read", path, f.Name, env)
				}
			}
			if f.Type.Kind() == reflect.Struct && f.Type.Name() == "" { // a section
				walk(f.Type, path+f.Name+".")
			}
		}
	}
	walk(reflect.TypeOf(FileConfig{}), "")
	if n < 40 {
		t.Fatalf("found only %d env tags: the walk missed the nested sections", n)
	}
}
