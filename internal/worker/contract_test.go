package worker_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
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
	"github.com/conveyorhq/conveyor/internal/volume"
	"github.com/conveyorhq/conveyor/internal/worker"
)

// writeFiles is a processor that leaves the named files, each holding the
// input followed by its name.
func writeFiles(names ...string) func(context.Context, processor.Env, io.Writer) error {
	return func(_ context.Context, env processor.Env, _ io.Writer) error {
		in, err := os.ReadFile(env.Input)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(env.OutputDir, n), append(append([]byte{}, in...), n...), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
}

// secondWorker is another worker (its own volume) on b's buckets.
func secondWorker(t *testing.T, b bundle, run func(context.Context, processor.Env, io.Writer) error) *worker.Worker {
	t.Helper()
	vol, err := volume.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{OutputBucket: b.output}, b.srv.Client, b.store, vol, &fakeProc{RunFn: run})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// outputsOf returns the output objects under key's prefix: name -> job in
// their metadata.
func outputsOf(t *testing.T, b bundle, key string) map[string]string {
	t.Helper()
	ctx := context.Background()
	list, err := b.srv.Client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &b.output, Prefix: aws.String(job.OutputPrefix(key)), Delimiter: aws.String("/")})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range list.Contents {
		head, err := b.srv.Client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.output, Key: o.Key})
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := job.OutputRel(key, aws.ToString(o.Key))
		got[rel] = head.Metadata[job.MetaJob]
	}
	return got
}

func overwrite(t *testing.T, b bundle, key string, body []byte) *job.Record {
	t.Helper()
	return newJob(t, b, key, body, 3)
}

func state(t *testing.T, b bundle, id string) *job.Record {
	t.Helper()
	r, _, err := b.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestOlderVersionFinishingLastPublishesNothing: an older version's attempt
// that finishes after the newer version published ends superseded and
// leaves the newer outputs alone.
func TestOlderVersionFinishingLastPublishesNothing(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	started, release := make(chan struct{}), make(chan struct{})
	b.proc.RunFn = func(ctx context.Context, env processor.Env, log io.Writer) error {
		close(started)
		<-release
		return writeFiles("out.txt", "extra.txt")(ctx, env, log)
	}
	old := newJob(t, b, "k", []byte("X"), 3)
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background(), old.ID) }()
	<-started
	newer := overwrite(t, b, "k", []byte("Y"))
	if err := secondWorker(t, b, writeFiles("out.txt")).Run(context.Background(), newer.ID); err != nil {
		t.Fatalf("newer version: %v", err)
	}
	close(release)
	if err := <-done; !errors.Is(err, worker.ErrSuperseded) {
		t.Fatalf("older version finishing last: %v, want superseded", err)
	}
	if got := outputsOf(t, b, "k"); len(got) != 1 || got["out.txt"] != newer.ID {
		t.Fatalf("outputs of k: %v, want only out.txt of %s", got, newer.ID)
	}
	if data := get(t, b, b.output, "k/out.txt"); string(data) != "Yout.txt" {
		t.Fatalf("k/out.txt = %q", data)
	}
	if r := state(t, b, old.ID); r.State != job.Superseded || r.Attempt != 1 {
		t.Fatalf("older job: %s after %d attempts", r.State, r.Attempt)
	}
}

// TestPublishRaceIsFencedByConditionalWrites: the newer version uploads and
// publishes between the older attempt's currency check and its writes.
// Neither order of the interleaving leaves an older output behind.
func TestPublishRaceIsFencedByConditionalWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		newer []string // files the newer version's processor leaves
	}{
		{"same file: the older write meets a changed ETag", []string{"z.txt"}},
		{"other file: the older write lands and is taken back", []string{"m.txt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w, b := setup(t, worker.Config{})
			b.proc.RunFn = writeFiles("a.txt", "z.txt")
			old := newJob(t, b, "k", []byte("X"), 3)
			var newer *job.Record
			w.SetBeforePut(func(key string) {
				if key != "k/z.txt" || newer != nil {
					return
				}
				// a.txt is written; z.txt is next, its checks passed.
				newer = overwrite(t, b, "k", []byte("Y"))
				if err := secondWorker(t, b, writeFiles(tc.newer...)).Run(context.Background(), newer.ID); err != nil {
					t.Errorf("newer version: %v", err)
				}
			})
			if err := w.Run(context.Background(), old.ID); !errors.Is(err, worker.ErrSuperseded) {
				t.Fatalf("older version: %v, want superseded", err)
			}
			got := outputsOf(t, b, "k")
			if len(got) != len(tc.newer) {
				t.Fatalf("outputs of k: %v, want only %v of the newer job", got, tc.newer)
			}
			for _, n := range tc.newer {
				if got[n] != newer.ID {
					t.Fatalf("outputs of k: %v, want %v of %s", got, tc.newer, newer.ID)
				}
			}
			if r := state(t, b, old.ID); r.State != job.Superseded {
				t.Fatalf("older job: %s", r.State)
			}
		})
	}
}

// TestNewerVersionRemovesOlderOutputs: what sits under a key describes its
// latest version only; every output names its job and input version.
func TestNewerVersionRemovesOlderOutputs(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	b.proc.RunFn = writeFiles("a.txt", "b.txt")
	first := newJob(t, b, "k", []byte("X"), 3)
	if err := w.Run(context.Background(), first.ID); err != nil {
		t.Fatal(err)
	}
	b.proc.RunFn = writeFiles("a.txt")
	second := overwrite(t, b, "k", []byte("Y"))
	if err := w.Run(context.Background(), second.ID); err != nil {
		t.Fatal(err)
	}
	if got := outputsOf(t, b, "k"); len(got) != 1 || got["a.txt"] != second.ID {
		t.Fatalf("outputs of k: %v, want a.txt of %s only", got, second.ID)
	}
	head, err := b.srv.Client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &b.output, Key: aws.String("k/a.txt")})
	if err != nil {
		t.Fatal(err)
	}
	if v := head.Metadata[job.MetaInputVersion]; v != second.InputVersion() {
		t.Fatalf("input version in metadata %q, want %q", v, second.InputVersion())
	}
	// The first job's record still lists a.txt; its owner is now another job.
	rec := state(t, b, first.ID)
	if err := rec.CheckOutput("k/a.txt", head.Metadata); !errors.Is(err, job.ErrNotItsOutput) {
		t.Fatalf("the first job's claim on k/a.txt: %v", err)
	}
}

// TestStoreConflictIsPermanent: a path the embedded server cannot hold
// (an object where a folder is needed) fails at once, naming the conflict.
func TestStoreConflictIsPermanent(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	b.proc.RunFn = writeFiles("out")
	first := newJob(t, b, "a", []byte("X"), 3)
	if err := w.Run(context.Background(), first.ID); err != nil {
		t.Fatal(err)
	}
	// "a" is removed and "a/out" uploaded: its output "a/out/out" needs a
	// folder where the output "a/out" is a file.
	if _, err := b.srv.Client.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &b.input, Key: aws.String("a")}); err != nil {
		t.Fatal(err)
	}
	second := newJob(t, b, "a/out", []byte("Y"), 5)
	err := w.Run(context.Background(), second.ID)
	if !errors.Is(err, worker.ErrDead) || !strings.Contains(err.Error(), "conflicts") {
		t.Fatalf("conflicting output path: %v", err)
	}
	if r := state(t, b, second.ID); r.Attempt != 1 {
		t.Fatalf("a permanent conflict took %d attempts", r.Attempt)
	}
}

// failingTransport fails every request while fail is set.
type failingTransport struct {
	next interface {
		Do(*http.Request) (*http.Response, error)
	}
	fail atomic.Bool
}

func (f *failingTransport) Do(r *http.Request) (*http.Response, error) {
	if f.fail.Load() {
		return nil, errors.New("state store unreachable (test)")
	}
	return f.next.Do(r)
}

// TestLeaseThatCannotRenewFencesTheAttempt: when the record cannot be
// renewed for two thirds of the lease, the attempt is cancelled and
// publishes nothing.
func TestLeaseThatCannotRenewFencesTheAttempt(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{Lease: 3 * time.Second})
	ft := &failingTransport{next: b.srv.Client.Options().HTTPClient}
	stateClient := s3.New(b.srv.Client.Options(), func(o *s3.Options) { o.HTTPClient = ft; o.RetryMaxAttempts = 1 })
	store := jobstore.New(stateClient, b.store.Bucket)
	w, err := worker.New(worker.Config{OutputBucket: b.output, Lease: 3 * time.Second}, b.srv.Client, store, b.vol, b.proc)
	if err != nil {
		t.Fatal(err)
	}
	var cause error
	b.proc.RunFn = func(ctx context.Context, env processor.Env, log io.Writer) error {
		os.WriteFile(filepath.Join(env.OutputDir, "out.txt"), []byte("x"), 0o644)
		ft.fail.Store(true) // the store goes away mid-attempt
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
			return ctx.Err()
		case <-time.After(time.Minute):
			return errors.New("the attempt was not fenced within a minute")
		}
	}
	rec := newJob(t, b, "k", []byte("X"), 3)
	err = w.Run(context.Background(), rec.ID)
	ft.fail.Store(false)
	if !errors.Is(err, worker.ErrBusy) || cause == nil || !strings.Contains(cause.Error(), "lease") {
		t.Fatalf("run with an unrenewable lease: %v (processor's cause %v)", err, cause)
	}
	if got := outputsOf(t, b, "k"); len(got) != 0 {
		t.Fatalf("a fenced attempt published %v", got)
	}
}

// TestLeaseTakenByAnotherFencesTheAttempt: once the record names another
// attempt, the heartbeat cancels this one, which publishes nothing.
func TestLeaseTakenByAnotherFencesTheAttempt(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{Lease: 3 * time.Second})
	rec := newJob(t, b, "k", []byte("X"), 3)
	b.proc.RunFn = func(ctx context.Context, env processor.Env, log io.Writer) error {
		os.WriteFile(filepath.Join(env.OutputDir, "out.txt"), []byte("x"), 0o644)
		// The lease lapsed (a long pause) and a clone claimed the job.
		_, err := b.store.Update(ctx, rec.ID, func(r *job.Record) error {
			r.LeaseUntil = aws.Time(time.Now().Add(-time.Second))
			return r.Claim("vol-clone/p", "clone-token", time.Now(), time.Hour, false)
		})
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Minute):
			return nil // not fenced: publish, which the test catches
		}
	}
	if err := w.Run(context.Background(), rec.ID); !errors.Is(err, worker.ErrBusy) {
		t.Fatalf("run after losing the job: %v", err)
	}
	if got := outputsOf(t, b, "k"); len(got) != 0 {
		t.Fatalf("an attempt that lost its lease published %v", got)
	}
	if r := state(t, b, rec.ID); r.Owner != "vol-clone/p" || r.State != job.Running {
		t.Fatalf("the record was overwritten by the fenced attempt: %+v", r)
	}
}

// corruptingTransport flips a byte of every object body read from bucket.
type corruptingTransport struct {
	next interface {
		Do(*http.Request) (*http.Response, error)
	}
	bucket string
	stall  time.Duration // instead of corrupting, stall the body this long
}

func (c *corruptingTransport) Do(r *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(r)
	if err != nil || r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/"+c.bucket+"/") || resp.StatusCode != 200 {
		return resp, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if c.stall > 0 {
		resp.Body = &stallingBody{ctx: r.Context(), d: c.stall, data: body}
		return resp, nil
	}
	if len(body) > 0 {
		body[0] ^= 0xff
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

type stallingBody struct {
	ctx  context.Context
	d    time.Duration
	data []byte
}

func (s *stallingBody) Read(p []byte) (int, error) {
	select {
	case <-s.ctx.Done():
		return 0, s.ctx.Err()
	case <-time.After(s.d):
	}
	return copy(p, s.data), io.EOF
}
func (s *stallingBody) Close() error { return nil }

// TestFetchChecksTheBytesAreTheVersion and TestStalledFetchFails: a fetch
// whose bytes do not match the version's ETag, or that stalls, fails the
// attempt (which is retried) instead of processing whatever arrived.
func TestFetchChecksTheBytesAreTheVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		stall time.Duration
		want  string
	}{{"corrupted", 0, "MD5"}, {"stalled", 5 * time.Second, "stalled"}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, b := setup(t, worker.Config{})
			ct := &corruptingTransport{next: b.srv.Client.Options().HTTPClient, bucket: b.input, stall: tc.stall}
			client := s3.New(b.srv.Client.Options(), func(o *s3.Options) { o.HTTPClient = ct })
			w, err := worker.New(worker.Config{OutputBucket: b.output, StallTimeout: 300 * time.Millisecond}, client, b.store, b.vol, b.proc)
			if err != nil {
				t.Fatal(err)
			}
			rec := newJob(t, b, "k", []byte("the real content"), 3)
			var re *worker.RetryError
			if err := w.Run(context.Background(), rec.ID); !errors.As(err, &re) || !strings.Contains(re.Cause, tc.want) {
				t.Fatalf("fetch: %v, want a retry naming %q", err, tc.want)
			}
			if b.proc.runs.Load() != 0 {
				t.Fatal("the processor ran on bytes that are not the job's version")
			}
		})
	}
}

// TestKeysAreEscapedInTheLog: a key cannot forge a line of the job log.
func TestKeysAreEscapedInTheLog(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	key := "evil\n=== conveyor: attempt 1 succeeded: 99 output(s)\x1b[2J"
	rec := newJob(t, b, key, []byte("x"), 3)
	if err := w.Run(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	logPath, _ := b.vol.LogPath(rec.ID)
	log, _ := os.ReadFile(logPath)
	if strings.Contains(string(log), "\n=== conveyor: attempt 1 succeeded: 99") || strings.Contains(string(log), "\x1b") {
		t.Fatalf("the key forged a log line:\n%s", log)
	}
	if !strings.Contains(string(log), `evil\n===`) {
		t.Fatalf("the key is not in the log, escaped:\n%s", log)
	}
}

// TestJobLogIsCappedPerAttempt: a processor that prints without end leaves
// a bounded log with its head, its tail and what was cut.
func TestJobLogIsCappedPerAttempt(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{LogMaxBytes: 8 << 10})
	b.proc.RunFn = func(_ context.Context, env processor.Env, log io.Writer) error {
		io.WriteString(log, "FIRST LINE\n")
		for i := 0; i < 10_000; i++ {
			io.WriteString(log, "noise noise noise noise noise noise noise noise\n")
		}
		io.WriteString(log, "LAST LINE\n")
		return nil
	}
	rec := newJob(t, b, "k", []byte("x"), 3)
	if err := w.Run(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	logPath, _ := b.vol.LogPath(rec.ID)
	log, _ := os.ReadFile(logPath)
	if len(log) > 12<<10 || !strings.Contains(string(log), "FIRST LINE") || !strings.Contains(string(log), "LAST LINE") || !strings.Contains(string(log), "bytes omitted") {
		t.Fatalf("log of %d bytes; head/tail/cut note missing:\n%.300s", len(log), log)
	}
}

// stallingPuts never answers a PUT into bucket; it reads nothing of it.
type stallingPuts struct {
	next interface {
		Do(*http.Request) (*http.Response, error)
	}
	bucket string
}

func (s *stallingPuts) Do(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/"+s.bucket+"/") {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return s.next.Do(r)
}

// TestStalledUploadFailsTheAttempt: an upload that makes no progress for
// worker.stall_timeout fails the attempt (retried), instead of hanging it.
func TestStalledUploadFailsTheAttempt(t *testing.T) {
	t.Parallel()
	_, b := setup(t, worker.Config{})
	client := s3.New(b.srv.Client.Options(), func(o *s3.Options) {
		o.HTTPClient = &stallingPuts{next: b.srv.Client.Options().HTTPClient, bucket: b.output}
		o.RetryMaxAttempts = 1
	})
	w, err := worker.New(worker.Config{OutputBucket: b.output, StallTimeout: 300 * time.Millisecond}, client, b.store, b.vol, b.proc)
	if err != nil {
		t.Fatal(err)
	}
	rec := newJob(t, b, "k", []byte("x"), 3)
	var re *worker.RetryError
	if err := w.Run(context.Background(), rec.ID); !errors.As(err, &re) || !strings.Contains(re.Cause, "stalled") {
		t.Fatalf("stalled upload: %v, want a retry naming the stall", err)
	}
}

// TestDeadLatestVersionLeavesNoOlderOutputs: when the latest version's
// processing fails for good, the outputs of the version before it go too:
// what sits under the key never describes content the input no longer has.
func TestDeadLatestVersionLeavesNoOlderOutputs(t *testing.T) {
	t.Parallel()
	w, b := setup(t, worker.Config{})
	b.proc.RunFn = writeFiles("out.txt")
	first := newJob(t, b, "k", []byte("X"), 3)
	if err := w.Run(context.Background(), first.ID); err != nil {
		t.Fatal(err)
	}
	if got := outputsOf(t, b, "k"); got["out.txt"] != first.ID {
		t.Fatalf("setup: outputs %v", got)
	}
	b.proc.RunFn = func(context.Context, processor.Env, io.Writer) error {
		return errors.Join(errors.New("/opt/missing"), processor.ErrNotFound)
	}
	second := overwrite(t, b, "k", []byte("Y"))
	if err := w.Run(context.Background(), second.ID); !errors.Is(err, worker.ErrDead) {
		t.Fatalf("second version: %v", err)
	}
	if got := outputsOf(t, b, "k"); len(got) != 0 {
		t.Fatalf("outputs of an older version stayed after the latest died: %v", got)
	}
}
