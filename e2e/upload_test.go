package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
)

// TestUploadWithSDK: every object put with the SDK gets a succeeded record
// whose checksums and report are what we compute ourselves.
func TestUploadWithSDK(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})

	bin := make([]byte, 70_000)
	rand.Read(bin)
	inputs := map[string][]byte{
		"hello.txt":          []byte("hello world\n"),
		"docs/poem.txt":      []byte("Tyger Tyger, burning bright,\nIn the forests of the night;\n\tWhat immortal hand or eye,\r\nCould frame thy fearful symmetry? no newline at end"),
		"data/random.bin":    bin,
		"empty-ish/utf8.txt": []byte("naïve café — 日本語 テキスト\n\n  spaced   words  \n"),
	}
	ids := map[string]string{}
	for k, b := range inputs {
		ids[k] = put(t, up.S3, k, b)
	}
	for k, b := range inputs {
		r := waitState(t, up.S3, ids[k], job.Succeeded, jobTimeout)
		if r.Key != k || r.Bucket != inputBucket || r.Attempt != 1 {
			t.Errorf("record of %q: key %q bucket %q attempt %d", k, r.Key, r.Bucket, r.Attempt)
		}
		if len(r.Outputs) != 1 || r.Outputs[0].Key != k+"/report.json" {
			t.Errorf("record of %q: outputs %+v, want one at %q", k, r.Outputs, k+"/report.json")
		}
		checkReport(t, up.S3, r, b)
	}
}

// TestUploadWithAWSCLI drives the pipeline with the AWS CLI, configured the
// way the user is told to (eval "$(conveyor env)"), and with conveyor's own
// put, get, jobs and logs.
func TestUploadWithAWSCLI(t *testing.T) {
	t.Parallel()
	awsBin, err := exec.LookPath("aws")
	if err != nil {
		t.Skip("the AWS CLI (aws) is not on PATH; install it (Debian: apt-get install awscli) to run this test")
	}
	up := startUp(t, upOptions{})

	stdout, stderr, code := runCLI(t, "env", "--data-dir", up.DataDir)
	if code != 0 {
		t.Fatalf("conveyor env: exit %d: %s", code, stderr)
	}
	exports := parseExports(t, stdout)
	for _, k := range []string{"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} {
		if exports[k] == "" {
			t.Fatalf("conveyor env does not export %s:\n%s", k, stdout)
		}
	}
	if exports["AWS_ENDPOINT_URL"] != up.Endpoint || exports["AWS_SECRET_ACCESS_KEY"] != up.Creds.SecretAccessKey {
		t.Errorf("conveyor env exports endpoint %q secret %q, want %q and the data dir's secret", exports["AWS_ENDPOINT_URL"], exports["AWS_SECRET_ACCESS_KEY"], up.Endpoint)
	}
	home := t.TempDir()
	awsEnv := cleanEnv(
		"HOME="+home,
		"AWS_CONFIG_FILE="+os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(home, "no-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_PAGER=",
	)
	for k, v := range exports {
		awsEnv = append(awsEnv, k+"="+v)
	}
	awsRun := func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(awsBin, args...)
		cmd.Env = awsEnv
		cmd.Dir = t.TempDir()
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		if err := cmd.Run(); err != nil {
			t.Fatalf("aws %s: %v\nstderr: %s", strings.Join(args, " "), err, errb.String())
		}
		return out.Bytes()
	}

	dir := t.TempDir()
	small := []byte("uploaded by the AWS CLI\nsecond line\n")
	large := make([]byte, 9<<20+12345) // > 8 MiB: the CLI uploads it in parts
	rand.Read(large)
	files := map[string][]byte{"cli/small.txt": small, "cli/large.bin": large}
	for key, b := range files {
		f := filepath.Join(dir, filepath.Base(key))
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		awsRun(nil, "s3", "cp", "--no-progress", f, "s3://"+inputBucket+"/"+key)
	}
	for key, b := range files {
		id := headJobID(t, up.S3, key)
		r := waitState(t, up.S3, id, job.Succeeded, jobTimeout)
		raw := checkReport(t, up.S3, r, b)
		viaCLI := awsRun(nil, "s3", "cp", "s3://"+outputBucket+"/"+key+"/report.json", "-")
		if !bytes.Equal(viaCLI, raw) {
			t.Errorf("aws s3 cp of %s/report.json gave\n%s\nthe SDK gave\n%s", key, viaCLI, raw)
		}
		if sha256Hex(viaCLI) != r.Outputs[0].SHA256 {
			t.Errorf("report.json of %s via the CLI has sha256 %s, the record says %s", key, sha256Hex(viaCLI), r.Outputs[0].SHA256)
		}
	}
	if etag := headETag(t, up, "cli/large.bin"); !strings.Contains(etag, "-") {
		t.Errorf("cli/large.bin has ETag %s: the CLI did not upload it in parts, so multipart was not exercised", etag)
	}

	// conveyor put --wait, get, jobs, logs.
	putFile := filepath.Join(dir, "put-me.txt")
	putBody := []byte("one two three\nfour\n")
	if err := os.WriteFile(putFile, putBody, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = runCLI(t, "put", putFile, "--wait", "--data-dir", up.DataDir)
	if code != 0 {
		t.Fatalf("conveyor put --wait: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if want := "s3://" + outputBucket + "/put-me.txt/report.json"; !strings.Contains(stdout, want) {
		t.Errorf("conveyor put --wait printed\n%s\nwithout the output location %s", stdout, want)
	}
	// The embedded server keeps objects as plain files; put says where.
	onDisk := filepath.Join(up.DataDir, "s3", outputBucket, "put-me.txt", "report.json")
	if !strings.Contains(stdout, "on disk: "+onDisk) {
		t.Errorf("conveyor put --wait printed\n%s\nwithout the file %s", stdout, onDisk)
	}
	putID := headJobID(t, up.S3, "put-me.txt") // the version put uploaded
	if !strings.Contains(stdout, putID) {
		t.Errorf("conveyor put --wait printed\n%s\nwithout the job ID %s", stdout, putID)
	}
	r := waitState(t, up.S3, putID, job.Succeeded, jobTimeout)
	raw := checkReport(t, up.S3, r, putBody)
	if file, err := os.ReadFile(onDisk); err != nil || !bytes.Equal(file, raw) {
		t.Errorf("%s holds %q (%v), the object is %q", onDisk, file, err, raw)
	}

	to := t.TempDir()
	if stdout, stderr, code := runCLI(t, "get", putID, "--to", to, "--data-dir", up.DataDir); code != 0 {
		t.Fatalf("conveyor get: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	got, err := os.ReadFile(filepath.Join(to, "report.json"))
	if err != nil {
		t.Fatalf("conveyor get wrote no report.json: %v", err)
	}
	if !bytes.Equal(got, raw) {
		t.Errorf("conveyor get wrote\n%s\nthe object is\n%s", got, raw)
	}

	stdout, stderr, code = runCLI(t, "jobs", "-o", "json", "--data-dir", up.DataDir)
	if code != 0 {
		t.Fatalf("conveyor jobs -o json: exit %d: %s", code, stderr)
	}
	var listed []job.Record
	if err := json.Unmarshal([]byte(stdout), &listed); err != nil {
		t.Fatalf("conveyor jobs -o json is not a JSON list of records: %v\n%s", err, stdout)
	}
	var listedIDs []string
	for _, l := range listed {
		listedIDs = append(listedIDs, l.ID)
		if l.State != job.Succeeded {
			t.Errorf("conveyor jobs lists %s (%q) as %s", l.ID, l.Key, l.State)
		}
	}
	wantIDs := []string{putID, headJobID(t, up.S3, "cli/small.txt"), headJobID(t, up.S3, "cli/large.bin")}
	slices.Sort(listedIDs)
	slices.Sort(wantIDs)
	if !slices.Equal(listedIDs, wantIDs) {
		t.Errorf("conveyor jobs -o json lists %v, want %v", listedIDs, wantIDs)
	}

	stdout, stderr, code = runCLI(t, "logs", putID, "--data-dir", up.DataDir)
	if code != 0 {
		t.Fatalf("conveyor logs: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("report: %d bytes, sha256 %s", len(putBody), sha256Hex(putBody)),
		"report: 2 lines, 4 words; wrote report.json",
		"attempt 1 succeeded",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("conveyor logs %s lacks %q:\n%s", putID, want, stdout)
		}
	}
}

// parseExports reads `export K=V` lines as a POSIX shell would, for the
// quoting conveyor env uses (bare words and single quotes).
func parseExports(t *testing.T, s string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		rest, ok := strings.CutPrefix(line, "export ")
		k, v, ok2 := strings.Cut(rest, "=")
		if !ok || !ok2 {
			t.Fatalf("conveyor env printed %q, not an export line", line)
		}
		var val strings.Builder
		for len(v) > 0 {
			if v[0] == '\'' {
				end := strings.IndexByte(v[1:], '\'')
				if end < 0 {
					t.Fatalf("unterminated quote in %q", line)
				}
				val.WriteString(v[1 : 1+end])
				v = v[2+end:]
				continue
			}
			if v[0] == '\\' && len(v) > 1 {
				val.WriteByte(v[1])
				v = v[2:]
				continue
			}
			val.WriteByte(v[0])
			v = v[1:]
		}
		m[k] = val.String()
	}
	return m
}

func headETag(t *testing.T, up *upProc, key string) string {
	t.Helper()
	h, err := up.S3.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	return *h.ETag
}
