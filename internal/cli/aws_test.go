package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// exampleBundle is the pdftotext example, relative to this package.
var exampleBundle, _ = filepath.Abs("../../examples/pdftotext")

func TestLoadConfigForAWS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.Symlink(exampleBundle, filepath.Join(dir, "pdf"))
	path := filepath.Join(dir, "conveyor.yaml")
	os.WriteFile(path, []byte(`
data_dir: /srv/conveyor
s3: {addr: "127.0.0.1:9100", endpoint: "http://127.0.0.1:9100"}
dashboard: {addr: off}
filter: {prefixes: [in/, raw/], suffixes: [.pdf, .PDF]}
processor: {bundle: pdf, timeout: 10m}
retry: {max_attempts: 4, backoff: 3s}
worker: {lease: 1m}
events: {bus: my-bus}
metrics: {emf: true}
logs: {group: my-group}
`), 0o644)
	a, err := LoadConfigForAWS(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"in/", "raw/"}, a.Prefixes); d != "" {
		t.Error(d)
	}
	if d := cmp.Diff([]string{".pdf", ".PDF"}, a.Suffixes); d != "" {
		t.Error(d)
	}
	if a.MaxAttempts != 4 || a.ProcessorTimeout != 10*time.Minute || a.BundleDir != filepath.Join(dir, "pdf") {
		t.Errorf("max attempts %d, timeout %s, bundle %q", a.MaxAttempts, a.ProcessorTimeout, a.BundleDir)
	}
	warned := strings.Join(a.Warnings, "\n")
	// The stack sets events, metrics and logs itself, naming its own bus
	// and log group: the file's are not deployed.
	for _, k := range []string{"data_dir is ignored", "s3 is ignored", "dashboard is ignored", "events is ignored", "metrics is ignored", "logs is ignored"} {
		if !strings.Contains(warned, k) {
			t.Errorf("no warning %q in:\n%s", k, warned)
		}
	}
	if len(a.Warnings) != 6 {
		t.Errorf("warnings:\n%s", warned)
	}

	// The worker's part, after the stack's own, is a file worker run loads.
	const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	part, err := a.WorkerConfig("/opt/conveyor/bundles/"+sha+".zip", sha)
	if err != nil {
		t.Fatal(err)
	}
	stack := "s3: {aws: true, region: eu-west-1}\nbuckets: {input: in-1, output: out-1, state: state-1}\nvolume: /var/lib/conveyor\ndata_dir: /opt/conveyor\n"
	c, err := loadConfig(writeFile(t, stack+string(part)), env(nil))
	if err != nil {
		t.Fatalf("the deployed config does not load: %v\n%s%s", err, stack, part)
	}
	if c.Processor.Bundle != "/opt/conveyor/bundles/"+sha+".zip" || c.Processor.BundleSHA256 != sha ||
		c.Processor.Timeout != 10*time.Minute || c.Retry.Backoff != 3*time.Second || c.Worker.Lease != time.Minute ||
		c.Buckets.Input != "in-1" || !c.S3.AWS || c.DataDir != "/opt/conveyor" {
		t.Errorf("deployed config: %+v", c)
	}
	if strings.Contains(string(part), "9100") || strings.Contains(string(part), "dashboard") || strings.Contains(string(part), "my-") {
		t.Errorf("the worker's part carries settings of the local home:\n%s", part)
	}
}

func TestLoadConfigForAWSRefuses(t *testing.T) {
	t.Parallel()
	noProc := t.TempDir()
	os.WriteFile(filepath.Join(noProc, "setup"), []byte("#!/bin/sh\n"), 0o755)
	for name, tc := range map[string]struct{ config, want string }{
		"overlapping prefixes":     {"filter: {prefixes: [data/, data/raw/]}", `filter.prefixes "data/raw/" and "data/" overlap`},
		"overlapping suffixes":     {"filter: {suffixes: [.tar.gz, .gz]}", `filter.suffixes ".tar.gz" and ".gz" overlap`},
		"same prefix twice":        {"filter: {prefixes: [a/, a/]}", `overlap`},
		"comma":                    {"filter: {prefixes: [\"a,b/\"]}", "contains a comma"},
		"bundle without processor": {"processor: {bundle: " + noProc + "}", "processor"},
		"missing bundle":           {"processor: {bundle: /nonexistent/bundle}", "processor.bundle"},
		"bad value":                {"retry: {max_attempts: 0}\nworkers: 0", "workers must be between 1 and 256"},
		"unknown key":              {"processor: {nmae: x}", "unknown setting nmae"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfigForAWS(writeFile(t, tc.config))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadConfigForAWS(%q): %v, want an error containing %q", tc.config, err, tc.want)
			}
		})
	}
}

func TestLoadConfigForAWSDefaults(t *testing.T) {
	t.Parallel()
	a, err := LoadConfigForAWS("")
	if err != nil || len(a.Warnings) != 0 || a.Prefixes != nil || a.BundleDir != "" || a.MaxAttempts != 0 {
		t.Fatalf("%+v, %v", a, err)
	}
	if part, err := a.WorkerConfig("", ""); err != nil || len(part) != 0 {
		t.Errorf("worker part of the defaults: %q, %v; want none", part, err)
	}
}
