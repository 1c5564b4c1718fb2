package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/bundle"
	"github.com/conveyorhq/conveyor/internal/cli"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

// The example bundle examples/pdftotext runs for real: its setup installs
// poppler-utils with the machine's package manager when pdftotext is
// missing (CI runs as root; elsewhere without it, the test fails with the
// setup's own message rather than skipping).

// makePDF returns a one-page PDF that shows text.
func makePDF(text string) []byte {
	content := "BT /F1 24 Tf 72 700 Td (" + text + ") Tj ET"
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(content), content),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	var offsets []int
	for i, o := range objs {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return b.Bytes()
}

// copyBundle copies the example bundle into a directory of the test's own,
// which the test may change to make a new version.
func copyBundle(t *testing.T, name string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "examples", name)
	dst := filepath.Join(t.TempDir(), name)
	syscall.ForkLock.RLock() // see writeScript
	defer syscall.ForkLock.RUnlock()
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// editBundle appends a line to a file of the bundle: a new version.
func editBundle(t *testing.T, dir, file, line string) {
	t.Helper()
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	f, err := os.OpenFile(filepath.Join(dir, file), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, line)
	f.Close()
}

func hashDir(t *testing.T, dir string) string {
	t.Helper()
	h, err := bundle.HashDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// setupRuns counts the setups of bundle version sha on the machine whose
// data dir is data.
func setupRuns(t *testing.T, data, sha string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "bundles", sha+".setup.log"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), " setup of bundle ")
}

// checkText checks that the job turned its PDF into text holding want.
func checkText(t *testing.T, up *upProc, r *job.Record, sha, want string) {
	t.Helper()
	if r.ProcessorVersion != "bundle:sha256:"+sha || !strings.HasPrefix(r.ConfigVersion, "sha256:") {
		t.Errorf("job %s: processor_version %q, config_version %q; want bundle:sha256:%s and a sha256", r.ID, r.ProcessorVersion, r.ConfigVersion, sha)
	}
	text := mustGet(t, up.S3, outputBucket, r.Key+"/text.txt")
	if !strings.Contains(string(text), want) {
		t.Errorf("text.txt of %s: %q, want it to hold %q", r.Key, text, want)
	}
	if info := mustGet(t, up.S3, outputBucket, r.Key+"/info.txt"); !strings.Contains(string(info), "Pages:") {
		t.Errorf("info.txt of %s: %q", r.Key, info)
	}
}

// The example bundle through `conveyor up`: its setup runs at the first
// start only, a new version's runs once more, and its processor turns a
// PDF into text.
func TestBundleThroughUp(t *testing.T) {
	t.Parallel()
	dir := copyBundle(t, "pdftotext")
	data := t.TempDir()
	cfg := fmt.Sprintf("processor: {bundle: %q}\n", dir)
	v1 := hashDir(t, dir)

	up := startUp(t, upOptions{Config: cfg, DataDir: data, Env: []string{sandboxed()}})
	id := put(t, up.S3, "docs/hello.pdf", makePDF("Hello from a bundle"))
	checkText(t, up, waitState(t, up.S3, id, job.Succeeded, jobTimeout), v1, "Hello from a bundle")
	if sandboxed() == "CONVEYOR_PROCESSOR_SANDBOX=required" && !strings.Contains(up.stderr.String(), "runs in a bubblewrap sandbox") {
		t.Errorf("the bundle's processor did not run in the sandbox; stderr:\n%s", up.stderr.String())
	}
	if n := setupRuns(t, data, v1); n != 1 {
		t.Fatalf("setup of %s ran %d times at the first start, want 1", v1, n)
	}
	up.stop()

	up = startUp(t, upOptions{Config: cfg, DataDir: data, Env: []string{sandboxed()}})
	if n := setupRuns(t, data, v1); n != 1 {
		t.Errorf("setup of %s ran %d times after a second start, want 1", v1, n)
	}
	up.stop()

	editBundle(t, dir, "processor", "# version 2")
	v2 := hashDir(t, dir)
	up = startUp(t, upOptions{Config: cfg, DataDir: data, Env: []string{sandboxed()}})
	if n := setupRuns(t, data, v2); n != 1 {
		t.Errorf("setup of the new version %s ran %d times, want 1", v2, n)
	}
	id = put(t, up.S3, "docs/second.pdf", makePDF("Second version"))
	checkText(t, up, waitState(t, up.S3, id, job.Succeeded, jobTimeout), v2, "Second version")

	// A bundle whose setup fails: up does not start and says why.
	broken := copyBundle(t, "pdftotext")
	editBundle(t, broken, "setup", "")
	os.WriteFile(filepath.Join(broken, "setup"), []byte("#!/bin/sh\necho 'E: Unable to locate package poppler-utils' >&2\nexit 100\n"), 0o755)
	bad := filepath.Join(t.TempDir(), "conveyor.yaml")
	os.WriteFile(bad, []byte(fmt.Sprintf("processor: {bundle: %q}\n", broken)), 0o644)
	stdout, stderr, code := runCLI(t, "up", "--config", bad, "--data-dir", t.TempDir(), "--s3-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	want := "conveyor: processor bundle " + hashDir(t, broken) + " setup failed (exit 100): E: Unable to locate package poppler-utils; taking no jobs"
	if code != 1 || !strings.Contains(stderr, want) || strings.Contains(stdout, "conveyor is up") {
		t.Errorf("up with a broken bundle: exit %d\nstderr %s\nstdout %s\nwant exit 1 and %q", code, stderr, stdout, want)
	}
}

// The example bundle through `conveyor worker run`, with the configuration
// the AWS stack deploys: the worker's part of conveyor.yaml as
// cli.LoadConfigForAWS renders it, after the stack's own settings (here an
// S3 endpoint instead of s3.aws), the bundle shipped as its zip archive and
// checked by SHA-256. Setup runs once per version on the machine; a broken
// setup takes no job and says why.
func TestBundleThroughWorkerRun(t *testing.T) {
	t.Parallel()
	up := startLambdaUp(t) // its own pipeline leaves these jobs alone
	ctx := context.Background()
	store := jobstore.New(up.S3, stateBucket)
	newJob := func(key string, body []byte) string {
		oc := upload(t, up.S3, key, body)
		rec := job.New(inputBucket, oc.Key, oc.VersionID, oc.ETag, oc.Size, 2, time.Now())
		rec.Dispatcher = "ssm"
		if err := store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		return rec.ID
	}
	machine := t.TempDir() // the worker's /opt/conveyor
	volume := t.TempDir()  // its /var/lib/conveyor

	// deploy writes what infra ships for a conveyor.yaml naming dir as
	// its bundle: the archive where user data puts it, and the config file.
	deploy := func(dir string) (cfgPath, sha string) {
		src := filepath.Join(t.TempDir(), "conveyor.yaml")
		os.WriteFile(src, []byte(fmt.Sprintf("filter: {suffixes: [.pdf]}\nprocessor: {bundle: %q, timeout: 2m}\nretry: {max_attempts: 2}\ndashboard: {addr: off}\n", dir)), 0o644)
		a, err := cli.LoadConfigForAWS(src)
		if err != nil {
			t.Fatal(err)
		}
		var zip bytes.Buffer
		if err := bundle.Pack(a.BundleDir, &zip); err != nil {
			t.Fatal(err)
		}
		sha = hashDir(t, dir)
		archive := filepath.Join(machine, "bundles", sha+".zip")
		os.MkdirAll(filepath.Dir(archive), 0o755)
		if err := os.WriteFile(archive, zip.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		part, err := a.WorkerConfig(archive, sha)
		if err != nil {
			t.Fatal(err)
		}
		stack := fmt.Sprintf("s3: {endpoint: %q, access_key_id: %q, secret_access_key: %q}\nbuckets: {input: %s, output: %s, state: %s}\nvolume: %q\ndata_dir: %q\n",
			up.Endpoint, up.Creds.AccessKeyID, up.Creds.SecretAccessKey, inputBucket, outputBucket, stateBucket, volume, machine)
		cfgPath = filepath.Join(t.TempDir(), "conveyor.yaml")
		if err := os.WriteFile(cfgPath, []byte(stack+string(part)), 0o644); err != nil {
			t.Fatal(err)
		}
		return cfgPath, sha
	}
	workerRun := func(cfg, id string) (string, int) {
		cmd := exec.Command(conveyorBin, "worker", "run", "--job", id, "--config", cfg)
		cmd.Env = cleanEnv(sandboxed())
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}

	dir := copyBundle(t, "pdftotext")
	cfg, sha := deploy(dir)
	for i, text := range []string{"First job", "Second job"} {
		id := newJob(fmt.Sprintf("worker-run/%d.pdf", i), makePDF(text))
		if out, code := workerRun(cfg, id); code != 0 {
			t.Fatalf("worker run: exit %d\n%s", code, out)
		}
		r, err := record(ctx, up.S3, id)
		if err != nil || r == nil || r.State != job.Succeeded {
			t.Fatalf("job %s: %+v, %v", id, r, err)
		}
		checkText(t, up, r, sha, text)
		if n := setupRuns(t, machine, sha); n != 1 {
			t.Errorf("after job %d, setup ran %d times, want 1", i+1, n)
		}
	}
	if _, err := os.Stat(filepath.Join(machine, "bundles", sha, "processor")); err != nil {
		t.Errorf("the archive was not unpacked into bundles/<sha256>/: %v", err)
	}

	// A new version is set up once more.
	editBundle(t, dir, "processor", "# version 2")
	cfg2, sha2 := deploy(dir)
	id := newJob("worker-run/v2.pdf", makePDF("Version two"))
	if out, code := workerRun(cfg2, id); code != 0 {
		t.Fatalf("worker run of version 2: exit %d\n%s", code, out)
	}
	r, _ := record(ctx, up.S3, id)
	checkText(t, up, r, sha2, "Version two")
	if n := setupRuns(t, machine, sha2); n != 1 || setupRuns(t, machine, sha) != 1 {
		t.Errorf("setups: new version %d, old %d; want 1 each", n, setupRuns(t, machine, sha))
	}

	// A broken setup: no job is taken, and the message says why.
	broken := copyBundle(t, "pdftotext")
	syscall.ForkLock.RLock()
	os.WriteFile(filepath.Join(broken, "setup"), []byte("#!/bin/sh\necho 'installing'\necho 'Error: Unable to find a match: poppler-utils' >&2\nexit 1\n"), 0o755)
	syscall.ForkLock.RUnlock()
	cfg3, sha3 := deploy(broken)
	id = newJob("worker-run/broken.pdf", makePDF("never"))
	for range 2 { // a failed setup runs again at the next start
		out, code := workerRun(cfg3, id)
		want := "conveyor: processor bundle " + sha3 + " setup failed (exit 1): Error: Unable to find a match: poppler-utils; taking no jobs"
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("worker run with a broken setup: exit %d\n%s\nwant exit 1 and %q", code, out, want)
		}
	}
	if n := setupRuns(t, machine, sha3); n != 2 {
		t.Errorf("a failed setup ran %d times in 2 starts, want 2 (never marked done)", n)
	}
	if r, _ := record(ctx, up.S3, id); r == nil || r.State != job.Queued || r.Attempt != 0 {
		t.Errorf("job of a broken bundle: %+v; want queued, no attempt", r)
	}
}
