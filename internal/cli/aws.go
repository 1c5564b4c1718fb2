package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/conveyorhq/conveyor/internal/bundle"
)

// AWSConfig is conveyor.yaml read for the AWS stack (infra/): what the
// stack takes from it, and the worker's part of it. The same file drives
// `conveyor up`; settings that only mean something there are ignored
// with a warning.
type AWSConfig struct {
	// Prefixes and Suffixes are the key filters, for the S3 notification
	// (one notification per prefix and suffix pair) and the orchestrator.
	// No two prefixes, and no two suffixes, overlap.
	Prefixes, Suffixes []string
	// MaxAttempts is retry.max_attempts, 0 when the file does not set it.
	MaxAttempts int
	// ProcessorTimeout is processor.timeout, 0 when the file does not set it.
	ProcessorTimeout time.Duration
	// BundleDir is the processor bundle directory (absolute), "" for none.
	BundleDir string
	// Warnings say, one setting each, what the stack ignores and why.
	Warnings []string

	// worker holds the sections of the file the worker reads.
	worker map[string]any
}

// awsWorkerSections are the top-level settings the worker on EC2 reads
// from the file; they travel to it as they are written.
var awsWorkerSections = []string{"filter", "processor", "workers", "retry", "worker"}

// awsIgnored are the settings that mean nothing on AWS, and why.
var awsIgnored = map[string]string{
	"data_dir":  "the worker keeps its machine state in /opt/conveyor",
	"s3":        "the stack uses Amazon S3 with the worker's instance role and the stack's region",
	"buckets":   "the stack creates its own buckets (see its outputs)",
	"volume":    "the worker's volume is the stack's EBS data volume at /var/lib/conveyor",
	"reconcile": "the reconciler function runs every 15 minutes on its own schedule",
	"retention": "finished history expires by the state bucket's lifecycle rules (parameter HistoryRetentionDays)",
	"dashboard": "there is no dashboard on AWS; use `conveyor jobs` with s3.aws",
	"snapshot":  "the data volume is snapshotted by the stack's DLM policy (parameters SnapshotTime, SnapshotRetain)",
	"stack":     "it tells client commands which stack's buckets to use",
	// The stack sets these in the worker's configuration itself (and the
	// functions' environment): they name its own resources.
	"events":  "the stack's functions and workers put job events on the default EventBridge bus",
	"metrics": "the stack's workers and functions write job metrics in EMF (namespace Conveyor) to CloudWatch Logs",
	"logs":    "the stack's workers send job logs to its own log group (output JobLogGroupName)",
}

// LoadWorkerConfig reads a worker's conveyor.yaml as `conveyor worker run
// --config` does, without the environment: the AWS stack's tests load the
// file its user data writes with it.
func LoadWorkerConfig(path string) (FileConfig, error) {
	return loadConfig(path, func(string) string { return "" })
}

// LoadConfigForAWS reads conveyor.yaml at path ("" for the defaults) as
// the AWS stack deploys it: only the file (no CONVEYOR_* variable of the
// machine that deploys), checked as `conveyor up` checks it, plus what
// AWS adds: key filters S3 can express, a bundle that is a directory
// holding an executable processor. The error names every problem;
// Warnings name what is ignored.
func LoadConfigForAWS(path string) (AWSConfig, error) {
	var a AWSConfig
	raw := map[string]any{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return a, fmt.Errorf("read config %s: %w", path, err)
		}
		if err := yaml.Unmarshal(b, &raw); err != nil && !errors.Is(err, io.EOF) {
			return a, fmt.Errorf("config %s: %v", path, yamlMessage(err))
		}
		if raw == nil {
			raw = map[string]any{}
		}
		if path, err = filepath.Abs(path); err != nil {
			return a, err
		}
	}
	c, err := defaultFileConfig(), error(nil)
	if path != "" {
		c, err = loadConfig(path, func(string) string { return "" })
	}
	if err != nil {
		return a, fmt.Errorf("config %s: %v", path, err)
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, err := range []error{c.validate(), c.workerConfig().WithDefaults().Validate(), c.orchestratorConfig().WithDefaults().Validate()} {
		if err != nil {
			bad("%v", err)
		}
	}

	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	a.worker = map[string]any{}
	for _, k := range keys {
		switch why, ignored := awsIgnored[k]; {
		case ignored:
			a.Warnings = append(a.Warnings, fmt.Sprintf("%s is ignored on AWS: %s", k, why))
		case contains(awsWorkerSections, k):
			a.worker[k] = raw[k]
		default:
			a.Warnings = append(a.Warnings, fmt.Sprintf("%s is not deployed: the AWS stack does not know it", k))
		}
	}

	a.Prefixes, a.Suffixes = c.Filter.Prefixes, c.Filter.Suffixes
	for _, p := range append(append([]string(nil), a.Prefixes...), a.Suffixes...) {
		if strings.Contains(p, ",") {
			bad("filter value %q contains a comma, which the orchestrator's CONVEYOR_FILTER_* list cannot carry", p)
		}
		if len(p) > 1024 {
			bad("filter value %q is longer than S3's 1,024-character filter rule", p[:40]+"...")
		}
	}
	if x, y, ok := overlap(a.Prefixes, strings.HasPrefix); ok {
		bad("filter.prefixes %q and %q overlap (one starts the other): S3 refuses overlapping notifications; keep %q, which matches both", x, y, y)
	}
	if x, y, ok := overlap(a.Suffixes, strings.HasSuffix); ok {
		bad("filter.suffixes %q and %q overlap (one ends the other): S3 refuses overlapping notifications; keep %q, which matches both", x, y, y)
	}
	if retry, ok := raw["retry"].(map[string]any); ok && retry["max_attempts"] != nil {
		a.MaxAttempts = c.Retry.MaxAttempts
	}
	if proc, ok := raw["processor"].(map[string]any); ok && proc["timeout"] != nil {
		a.ProcessorTimeout = c.Processor.Timeout
	}

	switch {
	case c.Processor.Bundle != "":
		if err := checkBundleDir(c); err != nil {
			bad("%v", err)
		}
		a.BundleDir = c.Processor.Bundle
	case len(c.Processor.Command) > 0:
		a.Warnings = append(a.Warnings, fmt.Sprintf("processor.command %q is not shipped: it must exist on the worker's AMI; ship it in a processor.bundle instead", c.Processor.Command[0]))
	default:
		if err := c.validateComponents(); err != nil {
			bad("%v", err)
		}
	}
	if len(problems) > 0 {
		return a, fmt.Errorf("config %s: %s", path, strings.Join(problems, "; "))
	}
	return a, nil
}

// checkBundleDir checks a bundle the stack is to pack: a directory whose
// processor (and setup, when present) is an executable file.
func checkBundleDir(c FileConfig) error {
	if err := c.checkBundle(); err != nil {
		return err
	}
	dir := c.Processor.Bundle
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("processor.bundle %s must be a directory for the stack to ship it", dir)
	}
	exe := func(name string, required bool) error {
		fi, err := os.Stat(name)
		switch {
		case errors.Is(err, os.ErrNotExist) && !required:
			return nil
		case err != nil:
			return fmt.Errorf("processor bundle: %v", err)
		case !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0:
			return fmt.Errorf("processor bundle: %s is not an executable file; chmod +x it", name)
		}
		return nil
	}
	if err := exe(c.bundleCommand(dir)[0], true); err != nil {
		return err
	}
	return exe(filepath.Join(dir, bundle.SetupFile), false)
}

// overlap returns two values of which one matches the other by match
// (strings.HasPrefix: y is a prefix of x), if any.
func overlap(vals []string, match func(s, affix string) bool) (x, y string, ok bool) {
	for i, a := range vals {
		for j, b := range vals {
			if i != j && match(a, b) {
				return a, b, true
			}
		}
	}
	return "", "", false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// WorkerConfig is the part of the file the worker on EC2 reads, as YAML:
// the sections it uses, as written, with processor.bundle pointing at the
// bundle archive the stack ships (bundleArchive, whose SHA-256 is
// bundleSHA256; both "" when there is no bundle). It holds no setting of
// the stack's own (s3, buckets, volume, data_dir): the stack writes those
// beside it, so the two make one file with no key twice.
func (a AWSConfig) WorkerConfig(bundleArchive, bundleSHA256 string) ([]byte, error) {
	out := map[string]any{}
	for k, v := range a.worker {
		out[k] = v
	}
	if a.BundleDir != "" {
		proc := map[string]any{}
		if p, ok := out["processor"].(map[string]any); ok {
			for k, v := range p {
				proc[k] = v
			}
		}
		proc["bundle"], proc["bundle_sha256"] = bundleArchive, bundleSHA256
		out["processor"] = proc
	}
	if len(out) == 0 {
		return nil, nil
	}
	return yaml.Marshal(out)
}
