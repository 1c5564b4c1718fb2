package lambda_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/lambda"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// The orchestrator's cost per record of a 100-record event: parse, filter,
// job ID, conditional create of the record, dispatch (a fake that returns
// a command ID at once) and the update that stores the command ID.
//
//	go test ./internal/lambda -run '^$' -bench Handle100 -benchtime 20x
//
// BenchmarkHandle100InMemory answers S3 from memory inside the client's
// transport: the SDK still builds, signs and parses every request, but no
// socket, server or disk is involved. BenchmarkHandle100LoopbackS3 writes
// the records to the embedded S3 server over loopback (its posix backend
// writes files and extended attributes), as `conveyor up` does.
func BenchmarkHandle100InMemory(b *testing.B) {
	client := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://memory.invalid"), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		HTTPClient:  &http.Client{Transport: newMemS3()},
	})
	benchHandle(b, client, "state")
}

func BenchmarkHandle100LoopbackS3(b *testing.B) {
	srv := s3test.Start(b)
	benchHandle(b, srv.Client, srv.Bucket(b, "state"))
}

func benchHandle(b *testing.B, client *s3.Client, stateBucket string) {
	const records = 100
	o, err := orchestrator.New(orchestrator.Config{InputBucket: "input"}, client, jobstore.New(client, stateBucket), &dispatchtest.Recorder{Driver: "ssm"})
	if err != nil {
		b.Fatal(err)
	}
	h := lambda.New(o, io.Discard)
	// Every iteration needs objects never seen, or it measures duplicates:
	// distinct ETags give distinct job IDs, and events with an ETag and a
	// size need no HEAD.
	events := make([][]byte, b.N)
	for i := range events {
		var objs []s3event.ObjectCreated
		for r := range records {
			sum := md5.Sum(fmt.Appendf(nil, "%d/%d", i, r))
			objs = append(objs, s3event.ObjectCreated{
				EventName: "ObjectCreated:Put", Bucket: "input", Key: fmt.Sprintf("bench/%03d file.txt", r),
				Size: 1024, ETag: hex.EncodeToString(sum[:]),
			})
		}
		events[i] = notification(b, objs...)
	}
	b.ResetTimer()
	for i := range b.N {
		resp, err := h.Handle(context.Background(), events[i])
		if err != nil || resp.Created != records {
			b.Fatalf("iteration %d: %+v, %v", i, resp.Created, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*records), "µs/record")
}

// memS3 is an in-memory S3 behind an http.RoundTripper: PUT with
// If-None-Match and If-Match, GET and HEAD of whole objects, which is all
// the job store and the orchestrator's HEAD use.
type memS3 struct {
	mu      sync.Mutex
	objects map[string]memObject
}

type memObject struct {
	body []byte
	etag string
}

func newMemS3() *memS3 { return &memS3{objects: map[string]memObject{}} }

func (m *memS3) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body.Close()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	path := r.URL.Path
	obj, exists := m.objects[path]
	switch r.Method {
	case http.MethodPut:
		if r.Header.Get("If-None-Match") == "*" && exists ||
			r.Header.Get("If-Match") != "" && (!exists || r.Header.Get("If-Match") != obj.etag) {
			return reply(r, http.StatusPreconditionFailed, nil, "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>"), nil
		}
		sum := md5.Sum(body)
		etag := `"` + hex.EncodeToString(sum[:]) + `"`
		m.objects[path] = memObject{body: body, etag: etag}
		return reply(r, http.StatusOK, http.Header{"Etag": {etag}}, ""), nil
	case http.MethodGet, http.MethodHead:
		if !exists {
			return reply(r, http.StatusNotFound, nil, "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"), nil
		}
		h := http.Header{"Etag": {obj.etag}, "Content-Length": {fmt.Sprint(len(obj.body))}, "Content-Type": {"application/json"}}
		if r.Method == http.MethodHead {
			return reply(r, http.StatusOK, h, ""), nil
		}
		return reply(r, http.StatusOK, h, string(obj.body)), nil
	}
	return reply(r, http.StatusNotImplemented, nil, "<Error><Code>NotImplemented</Code></Error>"), nil
}

func reply(r *http.Request, status int, h http.Header, body string) *http.Response {
	if h == nil {
		h = http.Header{}
	}
	if strings.HasPrefix(body, "<Error>") {
		h.Set("Content-Type", "application/xml")
	}
	return &http.Response{
		StatusCode: status, Status: http.StatusText(status), Header: h, Request: r,
		Body: io.NopCloser(bytes.NewReader([]byte(body))), ContentLength: int64(len(body)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
}
