package cli

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// TestCommandsAgainstTheStack: with --stack, jobs, logs, get and retry
// find the buckets in the stack's outputs (CloudFormation DescribeStacks)
// and work as they do locally, from a machine that has neither the
// buckets' names nor the worker's volume.
func TestCommandsAgainstTheStack(t *testing.T) {
	t.Parallel()
	ws := newWorkerStack(t)
	cf := ssmtest.NewCloudFormation(t, ssmtest.Stack{Name: "Conveyor", Outputs: map[string]string{
		"InputBucketName": ws.input, "OutputBucketName": ws.output, "StateBucketName": ws.state,
		"LogBucketName": "logs", "WorkerInstanceId": "i-0123456789abcdef0",
	}})

	// The EC2 worker: one job succeeds, one ends dead.
	good := ws.submit(t, "reports/good.txt", "good\n")
	if _, errOut, code := runArgs(t, ws.getenv, "worker", "run", "--job", good); code != 0 {
		t.Fatalf("worker run: exit %d: %s", code, errOut)
	}
	bad := ws.submit(t, "reports/bad.txt", "bad\n")
	failing := maps.Clone(ws.env)
	failing["CONVEYOR_PROCESSOR_COMMAND"] = "/bin/false"
	failing["CONVEYOR_RETRY_BACKOFF"], failing["CONVEYOR_RETRY_MAX_BACKOFF"] = "10ms", "20ms"
	if _, _, code := runArgs(t, func(k string) string { return failing[k] }, "worker", "run", "--job", bad); code != ExitJobDead {
		t.Fatalf("worker run of the failing job: exit %d, want %d", code, ExitJobDead)
	}

	// The operator's laptop: credentials and the stack's name, nothing else.
	laptop := map[string]string{
		"AWS_ENDPOINT_URL_CLOUDFORMATION": cf.URL,
		"CONVEYOR_S3_ENDPOINT":            ws.srv.Endpoint, // Amazon S3, played by the test server
		"CONVEYOR_S3_ACCESS_KEY_ID":       s3test.AccessKey,
		"CONVEYOR_S3_SECRET_ACCESS_KEY":   s3test.SecretKey,
		"CONVEYOR_DATA_DIR":               t.TempDir(),
	}
	getenv := func(k string) string { return laptop[k] }
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return runArgs(t, getenv, append([]string{"--stack", "Conveyor"}, args...)...)
	}

	out, errOut, code := run("jobs", "-o", "json")
	if code != 0 {
		t.Fatalf("jobs: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, good) || !strings.Contains(out, bad) {
		t.Fatalf("jobs -o json does not list both jobs:\n%s", out)
	}

	if out, errOut, code := run("logs", bad[:8]); code != 0 || !strings.Contains(out, "attempt 2 failed") {
		t.Errorf("logs: exit %d, %q:\n%s", code, errOut, out)
	}

	to := t.TempDir()
	if _, errOut, code := run("get", "reports/good.txt", "--to", to); code != 0 {
		t.Errorf("get: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(to, "report.json")); err != nil {
		t.Errorf("get did not write the report: %v", err)
	}

	if out, errOut, code := run("retry", bad); code != 0 || !strings.Contains(out, "queued again") {
		t.Fatalf("retry: exit %d, %q: %s", code, errOut, out)
	}
	if out, _, _ := run("jobs", "--state", "queued"); !strings.Contains(out, bad[:8]) {
		t.Errorf("jobs --state queued after retry:\n%s", out)
	}
	if _, errOut, code := run("retry", good); code != 0 {
		t.Errorf("retry of a succeeded job: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run("retry", good); code != ExitFailure || !strings.Contains(errOut, "not finished") {
		t.Errorf("retry of a queued job: exit %d, %q: want a refusal", code, errOut)
	}

	// A stack that does not exist, or is not Conveyor's, is said so.
	if _, errOut, code := runArgs(t, getenv, "--stack", "Nope", "jobs"); code != ExitFailure || !strings.Contains(errOut, "no such stack") {
		t.Errorf("unknown stack: exit %d, %q", code, errOut)
	}
	if cf.Calls() == 0 {
		t.Error("CloudFormation was never asked")
	}
}
