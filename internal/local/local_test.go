package local_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// One pipeline per test binary: the embedded gateway allows one per process.
var (
	pipe    *local.Pipeline
	dataDir string
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	var err error
	if dataDir, err = os.MkdirTemp("", "conveyor-local-"); err != nil {
		return 1, err
	}
	defer os.RemoveAll(dataDir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1, err
	}
	addr := l.Addr().String()
	l.Close()
	pipe, err = local.Start(context.Background(), local.Config{
		DataDir:   dataDir,
		S3Addr:    addr,
		Region:    "us-east-1",
		Buckets:   local.Buckets{Input: "input", Output: "output", State: "state"},
		Processor: processor.Config{Name: "report"},
		Workers:   2,
		Reconcile: time.Hour,
	})
	if err != nil {
		return 1, err
	}
	defer pipe.Stop()
	return m.Run(), nil
}

func upload(t testing.TB, key string, body []byte) (*s3.PutObjectOutput, string) {
	t.Helper()
	out, err := pipe.S3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("input"), Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	return out, job.ID("input", key, job.Revision(aws.ToString(out.VersionId), s3event.TrimETag(aws.ToString(out.ETag))))
}

func waitSucceeded(t testing.TB, id string) *job.Record {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, _, err := pipe.Store.Get(context.Background(), id)
		if err == nil && rec.State.Terminal() {
			if rec.State != job.Succeeded {
				t.Fatalf("job %s ended %s: %s", id, rec.State, rec.Error)
			}
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not finished after 30s (%v)", id, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSecondPipelineOnTheSameDataDirIsRefused(t *testing.T) {
	_, err := local.Start(context.Background(), local.Config{DataDir: dataDir, S3Addr: "127.0.0.1:1", Processor: processor.Config{Name: "noop"}})
	if err == nil || !strings.Contains(err.Error(), "another conveyor up") {
		t.Fatalf("second pipeline on one data dir: %v", err)
	}
}

func TestCredentialsAreStoredPrivately(t *testing.T) {
	st, err := os.Stat(filepath.Join(dataDir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials.json has mode %o, want 0600", st.Mode().Perm())
	}
}

// The same notification delivered three times (as at-least-once delivery
// may) gives one job and one processing run.
func TestSameEventThreeTimesOneRun(t *testing.T) {
	out, id := upload(t, "dup/event.txt", []byte("once"))
	waitSucceeded(t, id)
	rec := s3event.NewRecord("us-east-1", s3event.ObjectCreated{
		EventName: "ObjectCreated:Put", Bucket: "input", Key: "dup/event.txt", Size: 4,
		ETag: s3event.TrimETag(aws.ToString(out.ETag)), Sequencer: "01",
	})
	doc := []byte(fmt.Sprintf(`{"Records":[%s]}`, mustJSON(t, rec)))
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := pipe.Orch.HandleEvent(context.Background(), doc); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got := waitSucceeded(t, id)
	logFile, err := os.ReadFile(got.Log)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempt != 1 || strings.Count(string(logFile), "=== conveyor: job ") != 1 {
		t.Fatalf("attempt %d, log:\n%s", got.Attempt, logFile)
	}
}

// The input bucket is versioned, as on AWS: uploading X, then Y, then X
// again to one key is three object versions and three jobs, and the output
// is the third one's. Unversioned, the third upload had X's first ETag,
// mapped to X's finished job and was never processed.
func TestOverwriteXYXIsThreeJobs(t *testing.T) {
	const key = "overwrite/xyx.txt"
	x, y := []byte("content X\n"), []byte("content Y, longer\n")
	var ids []string
	for _, body := range [][]byte{x, y, x} {
		out, id := upload(t, key, body)
		if v := aws.ToString(out.VersionId); v == "" || v == "null" {
			t.Fatalf("upload got version %q: the input bucket is not versioned", v)
		}
		rec := waitSucceeded(t, id)
		if want := fmt.Sprintf("%x", sha256.Sum256(body)); rec.InputSHA256 != want {
			t.Errorf("job %s processed input %s, want %s", id, rec.InputSHA256, want)
		}
		ids = append(ids, id)
	}
	if ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
		t.Fatalf("jobs %q: want three distinct", ids)
	}

	get, err := pipe.S3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("output"), Key: aws.String(key + "/report.json")})
	if err != nil {
		t.Fatal(err)
	}
	defer get.Body.Close()
	var report struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
	if err := json.NewDecoder(get.Body).Decode(&report); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%x", sha256.Sum256(x)); report.SHA256 != want || report.Size != int64(len(x)) {
		t.Errorf("report.json has sha256 %s size %d, want X's %s %d", report.SHA256, report.Size, want, len(x))
	}
	if got := get.Metadata["conveyor-job"]; got != ids[2] {
		t.Errorf("report.json written by job %q, want the third upload's %q", got, ids[2])
	}
}

// BenchmarkJob measures one 1 KiB job from PutObject to its succeeded
// record, in process, with the report processor (a hash and a count of
// 1 KiB: next to nothing beside the pipeline's own cost).
// Run with -cpuprofile to see where it goes.
func BenchmarkJob(b *testing.B) {
	body := make([]byte, 1024)
	for i := 0; i < b.N; i++ {
		copy(body, fmt.Sprintf("bench %d %d", time.Now().UnixNano(), i))
		_, id := upload(b, fmt.Sprintf("bench/%d", i), body)
		waitSucceeded(b, id)
	}
}

// BenchmarkJobsParallel keeps several uploads in flight, as a busy
// pipeline sees them.
func BenchmarkJobsParallel(b *testing.B) {
	var n sync.Mutex
	i := 0
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Lock()
			i++
			k := i
			n.Unlock()
			_, id := upload(b, fmt.Sprintf("par/%d-%d", time.Now().UnixNano(), k), []byte(fmt.Sprint(k, time.Now().UnixNano())))
			waitSucceeded(b, id)
		}
	})
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
