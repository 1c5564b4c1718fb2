package worker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
	"github.com/conveyorhq/conveyor/internal/volume"
	"github.com/conveyorhq/conveyor/internal/worker"
)

// fakeProc is a processor whose behaviour each test sets.
type fakeProc struct {
	runs  atomic.Int32
	RunFn func(ctx context.Context, env processor.Env, log io.Writer) error
}

func (f *fakeProc) Name() string { return "fake" }
func (f *fakeProc) Run(ctx context.Context, env processor.Env, log io.Writer) error {
	f.runs.Add(1)
	return f.RunFn(ctx, env, log)
}

// copyInput is a processor that copies its input to two outputs.
func copyInput(_ context.Context, env processor.Env, log io.Writer) error {
	b, err := os.ReadFile(env.Input)
	if err != nil {
		return err
	}
	io.WriteString(log, "copying\n")
	os.MkdirAll(filepath.Join(env.OutputDir, "sub"), 0o755)
	os.WriteFile(filepath.Join(env.OutputDir, "copy.bin"), b, 0o644)
	return os.WriteFile(filepath.Join(env.OutputDir, "sub", "upper.txt"), bytes.ToUpper(b), 0o644)
}

type bundle struct {
	srv    *s3test.Server
	input  string
	output string
	store  *jobstore.Store
	vol    *volume.Volume
	proc   *fakeProc
}

func setup(t *testing.T, cfg worker.Config) (*worker.Worker, bundle) {
	t.Helper()
	srv := s3test.Start(t)
	b := bundle{srv: srv, input: srv.Bucket(t, "in"), output: srv.Bucket(t, "out"), proc: &fakeProc{RunFn: copyInput}}
	b.store = jobstore.New(srv.Client, srv.Bucket(t, "state"))
	if viaDirect {
		b.store = jobstore.New(srv.Direct, b.store.Bucket)
	}
	var err error
	if b.vol, err = volume.Open(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	cfg.OutputBucket = b.output
	if cfg.Backoff == 0 {
		cfg.Backoff, cfg.MaxBackoff = 10*time.Millisecond, 40*time.Millisecond
	}
	w, err := worker.New(cfg, srv.Client, b.store, b.vol, b.proc)
	if err != nil {
		t.Fatal(err)
	}
	if viaDirect {
		w.Objects = srv.Direct
	}
	return w, b
}

// viaDirect runs the worker of setup as `conveyor up` runs its own: its
// store and its inputs and outputs through the server's in-process
// s3server.Direct. Other workers of a test (secondWorker) stay on the S3
// API, as `conveyor worker run` in another process does, so the contract
// tests then race the two paths against each other.
var viaDirect = os.Getenv("CONVEYOR_TEST_WORKER_DIRECT") == "1"

// TestSuiteInProcess runs this package's tests again with viaDirect.
func TestSuiteInProcess(t *testing.T) {
	if viaDirect {
		t.Skip("this is the in-process run")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	cmd := exec.Command(os.Args[0], "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "CONVEYOR_TEST_WORKER_DIRECT=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the worker tests through s3server.Direct failed: %v\n%s", err, out)
	}
	// The child really ran in process mode, and ran the contract tests.
	for _, want := range []string{"this is the in-process run", "--- PASS: TestRunSucceeds", "--- PASS: TestStoreConflictIsPermanent"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Fatalf("the in-process run did not print %q:\n%s", want, out)
		}
	}
}

// newJob uploads body under key and creates its record, as the orchestrator does.
func newJob(t *testing.T, b bundle, key string, body []byte, maxAttempts int) *job.Record {
	t.Helper()
	out, err := b.srv.Client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &b.input, Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	rec := job.New(b.input, key, "", s3event.TrimETag(aws.ToString(out.ETag)), int64(len(body)), maxAttempts, time.Now())
	if err := b.store.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func get(t *testing.T, b bundle, bucket, key string) []byte {
	t.Helper()
	out, err := b.srv.Client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("get s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	data, _ := io.ReadAll(out.Body)
	return data
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func TestRunSucceeds(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	body := []byte("hello, volume")
	rec := newJob(t, b, "dir/my file+1.txt", body, 3)
	if err := w.Run(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	got, _, err := b.store.Get(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != job.Succeeded || got.Attempt != 1 || got.Size != int64(len(body)) || got.InputSHA256 != sum(body) {
		t.Fatalf("record: %+v", got)
	}
	want := map[string][]byte{"dir/my file+1.txt/copy.bin": body, "dir/my file+1.txt/sub%2Fupper.txt": bytes.ToUpper(body)}
	if len(got.Outputs) != len(want) {
		t.Fatalf("outputs %+v", got.Outputs)
	}
	for _, o := range got.Outputs {
		data := get(t, b, b.output, o.Key)
		if !bytes.Equal(data, want[o.Key]) || o.SHA256 != sum(data) || o.Size != int64(len(data)) {
			t.Errorf("output %s: %q (record %+v)", o.Key, data, o)
		}
	}
	work, _ := b.vol.WorkDir(rec.ID)
	if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch %s not cleaned after success", work)
	}
	logPath, _ := b.vol.LogPath(rec.ID)
	if log, _ := os.ReadFile(logPath); !strings.Contains(string(log), "copying") {
		t.Errorf("processor output missing from the log:\n%s", log)
	}
	// A finished job is a no-op.
	if err := w.Run(context.Background(), rec.ID); err != nil || b.proc.runs.Load() != 1 {
		t.Fatalf("second run: %v, %d processor runs", err, b.proc.runs.Load())
	}
}

func TestFailuresRetryWithBackoffThenDie(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	b.proc.RunFn = func(_ context.Context, env processor.Env, log io.Writer) error {
		io.WriteString(log, "no good\n")
		os.WriteFile(filepath.Join(env.WorkDir, "evidence"), []byte("x"), 0o644)
		return &processor.ExitError{Code: 1}
	}
	rec := newJob(t, b, "bad.txt", []byte("x"), 3)
	var afters []time.Duration
	for i := 0; i < 3; i++ {
		err := w.Run(context.Background(), rec.ID)
		var re *worker.RetryError
		switch {
		case i < 2 && errors.As(err, &re):
			afters = append(afters, re.After)
			time.Sleep(re.After) // the dispatcher waits this long too
		case i == 2 && errors.Is(err, worker.ErrDead):
		default:
			t.Fatalf("run %d: %v", i+1, err)
		}
	}
	// 10ms then 20ms, each ±20%.
	if afters[0] < 8*time.Millisecond || afters[0] > 12*time.Millisecond || afters[1] < 16*time.Millisecond || afters[1] > 24*time.Millisecond {
		t.Errorf("backoffs %v, want ~10ms then ~20ms", afters)
	}
	got, _, _ := b.store.Get(context.Background(), rec.ID)
	if got.State != job.Dead || got.Attempt != 3 || got.ExitCode == nil || *got.ExitCode != 1 || len(got.Attempts) != 3 {
		t.Fatalf("record: %+v", got)
	}
	work, _ := b.vol.WorkDir(rec.ID)
	if _, err := os.Stat(filepath.Join(work, "scratch", "evidence")); err != nil {
		t.Errorf("a dead job's scratch must be kept for inspection: %v", err)
	}
	logPath, _ := b.vol.LogPath(rec.ID)
	if log, _ := os.ReadFile(logPath); strings.Count(string(log), "no good") != 3 {
		t.Errorf("log should keep all 3 attempts:\n%s", log)
	}
}

func TestRetryInProcess(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{RetryInProcess: true})
	b.proc.RunFn = func(ctx context.Context, env processor.Env, log io.Writer) error {
		if b.proc.runs.Load() < 3 {
			return &processor.ExitError{Code: 2}
		}
		return copyInput(ctx, env, log)
	}
	rec := newJob(t, b, "flaky.txt", []byte("x"), 3)
	// It waited a second in the queue before its first attempt.
	b.store.Update(context.Background(), rec.ID, func(r *job.Record) error { r.CreatedAt = r.CreatedAt.Add(-time.Second); return nil })
	if err := w.Run(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	got, _, _ := b.store.Get(context.Background(), rec.ID)
	if got.State != job.Succeeded || got.Attempt != 3 {
		t.Fatalf("state %s after %d attempts", got.State, got.Attempt)
	}
	if want := got.Attempts[0].StartedAt.Sub(got.CreatedAt).Milliseconds(); got.Timings.QueuedMS != want || want < 1000 {
		t.Errorf("queued_ms %d after retries, want the wait before the first attempt (%d)", got.Timings.QueuedMS, want)
	}
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	b.proc.RunFn = func(context.Context, processor.Env, io.Writer) error {
		return errors.Join(errors.New("/opt/missing"), processor.ErrNotFound)
	}
	rec := newJob(t, b, "x.txt", []byte("x"), 5)
	if err := w.Run(context.Background(), rec.ID); !errors.Is(err, worker.ErrDead) {
		t.Fatalf("missing processor: %v", err)
	}

}

// TestOverwrittenInputIsSupersededNotDead: a job whose input was replaced
// before it ran ends superseded, without running the processor.
func TestOverwrittenInputIsSupersededNotDead(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	rec := newJob(t, b, "changed.txt", []byte("v1"), 5)
	b.srv.Client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &b.input, Key: aws.String("changed.txt"), Body: strings.NewReader("v2")})
	if err := w.Run(context.Background(), rec.ID); !errors.Is(err, worker.ErrSuperseded) {
		t.Fatalf("changed input: %v", err)
	}
	got, _, _ := b.store.Get(context.Background(), rec.ID)
	if got.State != job.Superseded || got.Attempt != 1 || got.Reason == "" || got.Error != "" || b.proc.runs.Load() != 0 {
		t.Fatalf("record: %+v, %d processor runs", got, b.proc.runs.Load())
	}
	// Deleted input: superseded too.
	rec = newJob(t, b, "deleted.txt", []byte("v1"), 5)
	b.srv.Client.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &b.input, Key: aws.String("deleted.txt")})
	if err := w.Run(context.Background(), rec.ID); !errors.Is(err, worker.ErrSuperseded) {
		t.Fatalf("deleted input: %v", err)
	}
}

func TestCrashedAttemptIsTakenOverOnTheSameVolume(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	rec := newJob(t, b, "x.txt", []byte("x"), 3)
	// A previous process on this volume claimed it and died (its lock died with it).
	b.store.Update(context.Background(), rec.ID, func(r *job.Record) error {
		return r.Claim(b.vol.ID()+"/a-dead-process", "old-token", time.Now(), time.Hour, false)
	})
	if err := w.Run(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	got, _, _ := b.store.Get(context.Background(), rec.ID)
	if got.State != job.Succeeded || got.Attempt != 2 || !strings.HasPrefix(got.Attempts[0].Error, job.CrashCause) {
		t.Fatalf("record: %+v", got)
	}
}

func TestLiveWorkerElsewhereIsNotDisturbed(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	rec := newJob(t, b, "x.txt", []byte("x"), 3)
	b.store.Update(context.Background(), rec.ID, func(r *job.Record) error {
		return r.Claim("vol-elsewhere/p1", "their-token", time.Now(), time.Hour, false)
	})
	if err := w.Run(context.Background(), rec.ID); !errors.Is(err, worker.ErrBusy) {
		t.Fatalf("run while another worker holds it: %v", err)
	}
	if b.proc.runs.Load() != 0 {
		t.Fatal("processor ran for a job held elsewhere")
	}
	// Same volume, same job, two processes: the volume lock says no.
	lock, err := b.vol.LockJob(rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if err := w.Run(context.Background(), rec.ID); !errors.Is(err, worker.ErrBusy) {
		t.Fatalf("run while locked on the volume: %v", err)
	}
}

func TestSymlinksAreNotPublished(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("do not publish"), 0o600)
	b.proc.RunFn = func(_ context.Context, env processor.Env, _ io.Writer) error {
		os.Symlink(secret, filepath.Join(env.OutputDir, "leak"))
		return os.WriteFile(filepath.Join(env.OutputDir, "ok.txt"), []byte("ok"), 0o644)
	}
	rec := newJob(t, b, "x.txt", []byte("x"), 3)
	if err := w.Run(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	got, _, _ := b.store.Get(context.Background(), rec.ID)
	if len(got.Outputs) != 1 || got.Outputs[0].Key != "x.txt/ok.txt" {
		t.Fatalf("outputs %+v: a symlink was followed", got.Outputs)
	}
}

// TestGracefulStopHandsTheAttemptBack: a stop mid-attempt gives the job
// back as it was before the attempt, so restarts never make it dead.
func TestGracefulStopHandsTheAttemptBack(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	rec := newJob(t, b, "x.txt", []byte("x"), 2)
	for i := 0; i < 3; i++ { // more stops than attempts allowed
		ctx, cancel := context.WithCancel(context.Background())
		b.proc.RunFn = func(ctx context.Context, _ processor.Env, _ io.Writer) error {
			cancel() // shutdown arrives mid-attempt
			<-ctx.Done()
			return ctx.Err()
		}
		if err := w.Run(ctx, rec.ID); !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted run: %v", err)
		}
		got, _, _ := b.store.Get(context.Background(), rec.ID)
		if got.State != job.Queued || got.Attempt != 0 || len(got.Attempts) != 0 || got.Handbacks != i+1 {
			t.Fatalf("after stop %d: %+v", i+1, got)
		}
	}
	b.proc.RunFn = copyInput
	if err := w.Run(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	got, _, _ := b.store.Get(context.Background(), rec.ID)
	if got.State != job.Succeeded || got.Attempt != 1 {
		t.Fatalf("after the stops: %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	bad := []worker.Config{
		{},
		{OutputBucket: "o", Lease: time.Second},
		{OutputBucket: "o", PartSize: 1 << 20},
		{OutputBucket: "o", Backoff: time.Minute, MaxBackoff: time.Second},
	}
	for _, c := range bad {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// The record names the configuration and processor that produced it.
func TestRecordNamesConfigAndProcessorVersion(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{ConfigVersion: "sha256:c0ffee", ProcessorVersion: "bundle:sha256:beef"})
	rec := newJob(t, b, "versions.txt", []byte("x"), 3)
	if err := w.Run(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	got, _, err := b.store.Get(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != job.Succeeded || got.ConfigVersion != "sha256:c0ffee" || got.ProcessorVersion != "bundle:sha256:beef" {
		t.Errorf("state %s, config_version %q, processor_version %q; want succeeded, sha256:c0ffee, bundle:sha256:beef", got.State, got.ConfigVersion, got.ProcessorVersion)
	}
}
