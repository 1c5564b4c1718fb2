package s3server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/s3event"
)

// One gateway per process: every test shares this server.
const (
	testAccessKey = "conveyor-test"
	testSecretKey = "conveyor-test-secret"
	testBucket    = "input"
)

var (
	testServer *Server
	testEvents = &recorder{}
	// startStdout is what Start wrote to stdout; it must be nothing.
	startStdout string
)

// recorder keeps every event the hook emitted. The hook runs before the
// response is sent, so once an SDK call returns its events are here: tests
// need neither waits nor sleeps.
type recorder struct {
	mu   sync.Mutex
	docs [][]byte
}

func (r *recorder) add(doc []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.docs = append(r.docs, doc)
}

// forKey returns the raw documents and decoded events about bucket/key.
// They are forgotten when the test ends, so the test can run again
// (go test -count=N) against the same shared server.
func (r *recorder) forKey(t *testing.T, bucket, key string) ([][]byte, []s3event.ObjectCreated) {
	t.Helper()
	t.Cleanup(func() { r.forget(bucket, key) })
	r.mu.Lock()
	defer r.mu.Unlock()
	var docs [][]byte
	var evs []s3event.ObjectCreated
	for _, doc := range r.docs {
		got, bad, err := s3event.Parse(doc)
		if err != nil || len(bad) > 0 || len(got) != 1 {
			t.Fatalf("hook emitted a document s3event.Parse rejects: %s (err %v, bad %v)", doc, err, bad)
		}
		if got[0].Bucket == bucket && got[0].Key == key {
			docs = append(docs, doc)
			evs = append(evs, got[0])
		}
	}
	return docs, evs
}

// forget drops the events about bucket/key.
func (r *recorder) forget(bucket, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.docs[:0]
	for _, doc := range r.docs {
		got, _, err := s3event.Parse(doc)
		if err == nil && len(got) == 1 && got[0].Bucket == bucket && got[0].Key == key {
			continue
		}
		kept = append(kept, doc)
	}
	r.docs = kept
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "s3server-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	dir, err = filepath.Abs(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	addr, err := freeAddr()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := Config{
		DataDir:   filepath.Join(dir, "data"),
		Addr:      addr,
		AccessKey: testAccessKey,
		SecretKey: testSecretKey,
		Buckets:   []string{testBucket, "output"},
		OnEvent:   testEvents.add,
		Logf:      func(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) },
	}
	// The data dir is first used as an older Conveyor did, with no
	// versioning, and the shared server then opens it with the input
	// bucket versioned.
	if startStdout, err = storeLegacyObject(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "store an object before versioning:", err)
		return 1
	}
	cfg.Versioned = []string{testBucket}
	var out string
	testServer, out, err = startCapturingStdout(cfg)
	startStdout += out
	if err != nil {
		fmt.Fprintln(os.Stderr, "start test server:", err)
		return 1
	}
	code := m.Run()
	if err := testServer.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop test server:", err)
		return 1
	}
	return code
}

// The objects storeLegacyObject stores before the input bucket is
// versioned, with one body: legacyKey is only read by tests,
// legacyOverwrittenKey is overwritten.
const (
	legacyKey            = "legacy/stored before versioning.txt"
	legacyOverwrittenKey = "legacy/overwritten after versioning.txt"
	legacyBody           = "stored by an older conveyor"
)

// legacyETag is the ETag the legacy objects were stored with.
var legacyETag string

// storeLegacyObject starts a server on cfg's data dir without versioning,
// stores legacyKey in the input bucket and stops the server again. It
// returns what the server printed on stdout.
func storeLegacyObject(cfg Config) (string, error) {
	cfg.Versioned = nil
	cfg.OnEvent = nil
	srv, stdout, err := startCapturingStdout(cfg)
	if err != nil {
		return stdout, err
	}
	// No keep-alive connections: Stop would wait for them.
	c := s3.New(s3.Options{
		BaseEndpoint: aws.String(srv.Endpoint()),
		Region:       DefaultRegion,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(testAccessKey, testSecretKey, ""),
		HTTPClient:   &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	for _, key := range []string{legacyKey, legacyOverwrittenKey} {
		var out *s3.PutObjectOutput
		out, err = c.PutObject(context.Background(), &s3.PutObjectInput{
			Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader(legacyBody),
		})
		if err == nil && aws.ToString(out.VersionId) != "" {
			err = fmt.Errorf("unversioned bucket gave version ID %q", aws.ToString(out.VersionId))
		}
		if err != nil {
			break
		}
		legacyETag = s3event.TrimETag(aws.ToString(out.ETag))
	}
	if serr := srv.Stop(); err == nil {
		err = serr
	}
	return stdout, err
}

// startCapturingStdout starts a server with os.Stdout redirected, to check
// that nothing of versitygw's reaches Conveyor's stdout.
func startCapturingStdout(cfg Config) (*Server, string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, "", err
	}
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	stdout := os.Stdout
	os.Stdout = w
	srv, startErr := Start(context.Background(), cfg)
	os.Stdout = stdout
	w.Close()
	return srv, <-out, startErr
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// client returns an SDK client for the shared server with the right keys.
func client() *s3.Client {
	return NewClient(testServer.Endpoint(), testAccessKey, testSecretKey, DefaultRegion)
}

// record decodes the first record of a raw document as generic JSON, to
// check field names as they are on the wire.
func record(t *testing.T, doc []byte) map[string]any {
	t.Helper()
	var n struct {
		Records []map[string]any
	}
	if err := json.Unmarshal(doc, &n); err != nil {
		t.Fatalf("decode %s: %v", doc, err)
	}
	if len(n.Records) != 1 {
		t.Fatalf("want 1 record, got %d in %s", len(n.Records), doc)
	}
	return n.Records[0]
}

// field follows a path of keys into decoded JSON.
func field(t *testing.T, v any, path ...string) any {
	t.Helper()
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%v: not an object at %q", path, p)
		}
		v = m[p]
	}
	return v
}
