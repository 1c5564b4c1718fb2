// Package e2e tests Conveyor as a user runs it: the conveyor binary is
// built once, each test starts `conveyor up` as a subprocess on its own
// data dir and port, and talks to it with real S3 clients and the CLI.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/s3server"
)

// Bounds of the waits. They are failure bounds, never delays: every wait
// returns as soon as its condition holds.
const (
	readyTimeout = 60 * time.Second
	jobTimeout   = 60 * time.Second
	stopTimeout  = 20 * time.Second
	pollEvery    = 75 * time.Millisecond
)

// Bucket names of the default configuration.
const (
	inputBucket  = "input"
	outputBucket = "output"
	stateBucket  = "state"
)

// conveyorBin is the binary under test, built by TestMain.
var conveyorBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "conveyor-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	conveyorBin = filepath.Join(dir, "conveyor")
	build := exec.Command("go", "build", "-o", conveyorBin, "./cmd/conveyor")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build conveyor: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	return filepath.Abs("..")
}

// cleanEnv is the environment of every subprocess: ours, without anything
// that would point Conveyor or an AWS client elsewhere.
//
// Processors run unsandboxed here unless a test asks otherwise with an
// extra CONVEYOR_PROCESSOR_SANDBOX (a later value of a key wins): the
// processors of these tests journal to the test's own directories, which a
// sandbox rightly does not let them write. The sandbox has its own tests
// (internal/processor), and the bundle tests run their processor in it.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CONVEYOR_") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "CONVEYOR_PROCESSOR_SANDBOX=off")
	return append(env, extra...)
}

// sandboxed is the extra environment of a subprocess whose processor must
// run in the sandbox: required where CI installs bubblewrap (the sandbox
// tests must run there, never be skipped), auto elsewhere.
func sandboxed() string {
	if os.Getenv("CONVEYOR_REQUIRE_SANDBOX") == "1" || os.Getenv("CI") == "true" {
		return "CONVEYOR_PROCESSOR_SANDBOX=required"
	}
	return "CONVEYOR_PROCESSOR_SANDBOX=auto"
}

// freePort returns a port that was free a moment ago on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for a writer and readers in parallel.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// upOptions describe one `conveyor up`.
type upOptions struct {
	Config  string   // conveyor.yaml content; empty for none
	Env     []string // extra KEY=VALUE
	DataDir string   // default t.TempDir()
	Port    int      // default a free port
	Args    []string // extra flags of `conveyor up`
}

// upProc is a running `conveyor up`.
type upProc struct {
	t        *testing.T
	DataDir  string
	Port     int
	Addr     string
	Endpoint string
	Creds    upCredentials
	S3       *s3.Client
	cmd      *exec.Cmd
	stdout   *syncBuffer
	stderr   *syncBuffer
	exited   chan struct{}
	waitErr  error
}

type upCredentials struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// startUp starts `conveyor up`, waits until it prints "conveyor is up" and
// registers its shutdown (SIGINT, then SIGKILL) with t.Cleanup.
func startUp(t *testing.T, o upOptions) *upProc {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.Port == 0 {
		o.Port = freePort(t)
	}
	p := &upProc{
		t: t, DataDir: o.DataDir, Port: o.Port,
		Addr:   fmt.Sprintf("127.0.0.1:%d", o.Port),
		stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{}),
	}
	p.Endpoint = "http://" + p.Addr
	args := append([]string{"up", "--data-dir", o.DataDir, "--s3-addr", p.Addr}, o.Args...)
	if o.Config != "" {
		cfg := filepath.Join(t.TempDir(), "conveyor.yaml")
		if err := os.WriteFile(cfg, []byte(o.Config), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", cfg)
	}
	p.launch(args, o.Env)

	credPath := filepath.Join(o.DataDir, "credentials.json")
	st, err := os.Stat(credPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", credPath, st.Mode().Perm())
	}
	b, err := os.ReadFile(credPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &p.Creds); err != nil {
		t.Fatalf("decode %s: %v", credPath, err)
	}
	if p.Creds.AccessKeyID == "" || p.Creds.SecretAccessKey == "" {
		t.Fatalf("%s lacks a key: %s", credPath, b)
	}
	p.S3 = s3server.NewClient(p.Endpoint, p.Creds.AccessKeyID, p.Creds.SecretAccessKey, "us-east-1")
	return p
}

// launch starts `conveyor <args>` (an up) with env, copies its stdout
// to p.stdout, and returns once it printed its whole banner, from
// "conveyor is up" to "Stop with Ctrl-C."; p.stop runs
// at the test's end.
func (p *upProc) launch(args, env []string) {
	t := p.t
	t.Helper()
	p.cmd = exec.Command(conveyorBin, args...)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Dir = t.TempDir() // no stray ./conveyor.yaml
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(out)
		// The banner starts with "conveyor is up" and ends with "Stop
		// with Ctrl-C.": ready only once the whole banner is in p.stdout,
		// so a test may read any line of it.
		once := sync.Once{}
		up := false
		for sc.Scan() {
			fmt.Fprintln(p.stdout, sc.Text())
			switch sc.Text() {
			case "conveyor is up":
				up = true
			case "Stop with Ctrl-C.":
				if up {
					once.Do(func() { close(ready) })
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		<-scanDone
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.stop)

	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("conveyor up exited before it was up: %v\nstdout:\n%s\nstderr:\n%s", p.waitErr, p.stdout, p.stderr)
	case <-time.After(readyTimeout):
		t.Fatalf("conveyor up did not print its banner (\"conveyor is up\" ... \"Stop with Ctrl-C.\") within %s\nstdout:\n%s\nstderr:\n%s", readyTimeout, p.stdout, p.stderr)
	}
}

// PID is the process ID of `conveyor up`.
func (p *upProc) PID() int { return p.cmd.Process.Pid }

// stop interrupts the process like Ctrl-C and kills it if it lingers. On
// failure the process's stderr goes to the test log.
func (p *upProc) stop() {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(os.Interrupt)
		t0 := time.Now()
		defer func() {
			if d := time.Since(t0); d > 5*time.Second {
				p.t.Logf("conveyor up (pid %d) took %s to exit after SIGINT", p.PID(), d.Round(time.Millisecond))
			}
		}()
		select {
		case <-p.exited:
		case <-time.After(stopTimeout):
			p.t.Errorf("conveyor up (pid %d) did not exit within %s of SIGINT; killing it", p.PID(), stopTimeout)
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	if p.t.Failed() {
		p.t.Logf("conveyor up on %s (data dir %s) stderr:\n%s", p.Addr, p.DataDir, p.stderr)
	}
}

// kill9 kills the process without warning and waits for it to be gone.
func (p *upProc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// ---- S3 and job helpers ----

// put uploads body with one PutObject and returns the job ID it implies.
func put(t *testing.T, c *s3.Client, key string, body []byte) string {
	t.Helper()
	id, err := tryPut(context.Background(), c, key, body)
	if err != nil {
		t.Fatalf("put s3://%s/%q: %v", inputBucket, key, err)
	}
	return id
}

func tryPut(ctx context.Context, c *s3.Client, key string, body []byte) (string, error) {
	out, err := c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(inputBucket), Key: aws.String(key), Body: bytes.NewReader(body),
	})
	if err != nil {
		return "", err
	}
	return jobID(key, aws.ToString(out.VersionId), aws.ToString(out.ETag)), nil
}

// jobID is the ID Conveyor gives the input object version.
func jobID(key, versionID, etag string) string {
	return job.ID(inputBucket, key, job.Revision(versionID, s3event.TrimETag(etag)))
}

// md5ETag is the ETag S3 gives a single-part upload of body.
func md5ETag(body []byte) string {
	s := md5.Sum(body)
	return hex.EncodeToString(s[:])
}

// headJobID is the job ID of the object currently at key, from HEAD.
func headJobID(t *testing.T, c *s3.Client, key string) string {
	t.Helper()
	h, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("head s3://%s/%q: %v", inputBucket, key, err)
	}
	return jobID(key, aws.ToString(h.VersionId), aws.ToString(h.ETag))
}

func getObject(ctx context.Context, c *s3.Client, bucket, key string) ([]byte, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

func mustGet(t *testing.T, c *s3.Client, bucket, key string) []byte {
	t.Helper()
	b, err := getObject(context.Background(), c, bucket, key)
	if err != nil {
		t.Fatalf("get s3://%s/%q: %v", bucket, key, err)
	}
	return b
}

// record reads a job record; nil when it does not exist (yet).
func record(ctx context.Context, c *s3.Client, id string) (*job.Record, error) {
	b, err := getObject(ctx, c, stateBucket, "jobs/"+id+".json")
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	var r job.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode record %s: %w", id, err)
	}
	return &r, nil
}

func isNotFound(err error) bool {
	var s interface{ HTTPStatusCode() int }
	return errors.As(err, &s) && s.HTTPStatusCode() == 404
}

// waitRecord polls the job's record until cond holds and returns it.
func waitRecord(t *testing.T, c *s3.Client, id string, timeout time.Duration, what string, cond func(*job.Record) bool) *job.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *job.Record
	var lastErr error
	for {
		r, err := record(context.Background(), c, id)
		if err == nil && r != nil && cond(r) {
			return r
		}
		if r != nil {
			last = r
		}
		lastErr = err
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(last, "", "  ")
			t.Fatalf("job %s: not %s within %s (last error %v); last record:\n%s", id, what, timeout, lastErr, b)
		}
		time.Sleep(pollEvery)
	}
}

// waitState waits until the job is in a terminal state and checks it is want.
func waitState(t *testing.T, c *s3.Client, id string, want job.State, timeout time.Duration) *job.Record {
	t.Helper()
	r := waitRecord(t, c, id, timeout, "finished", func(r *job.Record) bool { return r.State.Terminal() })
	if r.State != want {
		b, _ := json.MarshalIndent(r, "", "  ")
		t.Fatalf("job %s (%q) ended %s, want %s:\n%s", id, r.Key, r.State, want, b)
	}
	return r
}

// listKeys lists every key under prefix in bucket.
func listKeys(t *testing.T, c *s3.Client, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list s3://%s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// ---- what the report processor must say ----

// reportDoc is report.json.
type reportDoc struct {
	Key         string `json:"key"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	ContentType string `json:"content_type"`
	Text        bool   `json:"text"`
	Lines       *int64 `json:"lines"`
	Words       *int64 `json:"words"`
	Bytes       *int64 `json:"bytes"`
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// wc counts lines and words as `wc` does in the C locale.
func wc(b []byte) (lines, words int64) {
	in := false
	for _, c := range b {
		switch c {
		case '\n':
			lines++
			in = false
		case ' ', '\t', '\v', '\f', '\r':
			in = false
		default:
			if !in {
				words++
				in = true
			}
		}
	}
	return lines, words
}

// checkOutputs checks that every output in the record is in the output
// bucket with the recorded size and sha256, and returns them by key.
func checkOutputs(t *testing.T, c *s3.Client, r *job.Record) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	if len(r.Outputs) == 0 {
		t.Errorf("job %s (%q): no outputs in the record", r.ID, r.Key)
	}
	for _, o := range r.Outputs {
		b := mustGet(t, c, outputBucket, o.Key)
		if int64(len(b)) != o.Size || sha256Hex(b) != o.SHA256 {
			t.Errorf("output s3://%s/%q: %d bytes sha256 %s, record says %d bytes sha256 %s", outputBucket, o.Key, len(b), sha256Hex(b), o.Size, o.SHA256)
		}
		got[o.Key] = b
	}
	return got
}

// checkReport checks report.json of a job against the input bytes.
func checkReport(t *testing.T, c *s3.Client, r *job.Record, input []byte) []byte {
	t.Helper()
	if r.Size != int64(len(input)) || r.InputSHA256 != sha256Hex(input) {
		t.Errorf("record of %q: size %d input_sha256 %s, want %d %s", r.Key, r.Size, r.InputSHA256, len(input), sha256Hex(input))
	}
	outs := checkOutputs(t, c, r)
	var raw []byte
	for k, b := range outs {
		if rel, _ := job.OutputRel(r.Key, k); rel == "report.json" {
			raw = b
		}
	}
	if raw == nil {
		t.Fatalf("job %s: no report.json among outputs %v", r.ID, r.Outputs)
	}
	var rep reportDoc
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("decode report.json of %q: %v\n%s", r.Key, err, raw)
	}
	if rep.Key != r.Key {
		t.Errorf("report.json key %q, want %q", rep.Key, r.Key)
	}
	if rep.Size != int64(len(input)) || rep.SHA256 != sha256Hex(input) {
		t.Errorf("report.json of %q: size %d sha256 %s, want %d %s", r.Key, rep.Size, rep.SHA256, len(input), sha256Hex(input))
	}
	lines, words := wc(input)
	if rep.Text {
		if rep.Lines == nil || rep.Words == nil || rep.Bytes == nil {
			t.Errorf("report.json of text %q lacks lines/words/bytes: %s", r.Key, raw)
		} else if *rep.Lines != lines || *rep.Words != words || *rep.Bytes != int64(len(input)) {
			t.Errorf("report.json of %q: lines %d words %d bytes %d, want %d %d %d", r.Key, *rep.Lines, *rep.Words, *rep.Bytes, lines, words, len(input))
		}
	} else if rep.Lines != nil || rep.Words != nil {
		t.Errorf("report.json of binary %q has lines/words: %s", r.Key, raw)
	}
	return raw
}

// writeScript writes an executable /bin/sh script.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	// No fork of this process (tests run in parallel) may copy the write
	// descriptor: a child holding it would make the script's exec fail
	// with "text file busy".
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// runCLI runs a conveyor client command and returns stdout, stderr and the
// exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

// runCLIEnv is runCLI with env added to the clean environment.
func runCLIEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, conveyorBin, args...)
	cmd.Env = cleanEnv(env...)
	cmd.Dir = t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run conveyor %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}
