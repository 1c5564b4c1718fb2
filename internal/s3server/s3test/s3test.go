// Package s3test gives tests a real embedded S3 server on loopback. The
// gateway allows one instance per process, so every test of a test binary
// shares it; each test gets fresh buckets of its own, and can receive the
// object-created events of its buckets.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/s3server"
)

// Credentials of the shared server.
const (
	AccessKey = "CONVEYORTESTKEY"
	SecretKey = "conveyor-test-secret-key-0123456789"
	Region    = "us-east-1"
)

var (
	once     sync.Once
	shared   *Server
	startErr error
	counter  atomic.Int64
)

// Server is the shared server.
type Server struct {
	Endpoint string
	Client   *s3.Client
	// Direct reaches the same storage in process, as `conveyor up`'s own
	// components do.
	Direct  *s3server.Direct
	DataDir string

	mu   sync.Mutex
	subs map[string]func([]byte) // bucket -> event receiver
}

// Start returns the shared server, starting it on first use.
func Start(t testing.TB) *Server {
	t.Helper()
	once.Do(func() {
		dir, err := os.MkdirTemp("", "conveyor-s3test-")
		if err != nil {
			startErr = err
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			startErr = err
			return
		}
		addr := l.Addr().String()
		l.Close()
		s := &Server{DataDir: dir, subs: map[string]func([]byte){}}
		srv, err := s3server.Start(context.Background(), s3server.Config{
			DataDir: dir, Addr: addr, AccessKey: AccessKey, SecretKey: SecretKey, Region: Region,
			OnEvent: s.route,
			// One versioned bucket gives the server a versions directory,
			// so that tests can switch versioning on for buckets of theirs.
			Versioned: []string{"versioned-base"},
		})
		if err != nil {
			startErr = err
			return
		}
		s.Endpoint = srv.Endpoint()
		s.Client = s3server.NewClient(s.Endpoint, AccessKey, SecretKey, Region)
		s.Direct = srv.Direct()
		shared = s
	})
	if startErr != nil {
		t.Fatalf("start embedded S3 server: %v", startErr)
	}
	return shared
}

func (s *Server) route(body []byte) {
	objs, _, err := s3event.Parse(body)
	if err != nil || len(objs) == 0 {
		return
	}
	s.mu.Lock()
	fn := s.subs[objs[0].Bucket]
	s.mu.Unlock()
	if fn != nil {
		fn(body)
	}
}

// Bucket creates a fresh bucket for the test, named after prefix.
func (s *Server) Bucket(t testing.TB, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", strings.ToLower(prefix), counter.Add(1))
	if _, err := s.Client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// VersionedBucket creates a fresh bucket with versioning on, like the
// input bucket of `conveyor up` and of the AWS stack.
func (s *Server) VersionedBucket(t testing.TB, prefix string) string {
	t.Helper()
	name := s.Bucket(t, prefix)
	_, err := s.Client.PutBucketVersioning(context.Background(), &s3.PutBucketVersioningInput{
		Bucket:                  aws.String(name),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		t.Fatalf("enable versioning on %s: %v", name, err)
	}
	return name
}

// OnEvent sends the notifications of objects created in bucket to fn,
// until the test ends. fn runs before the upload's response is sent: it
// must not block.
func (s *Server) OnEvent(t testing.TB, bucket string, fn func([]byte)) {
	s.mu.Lock()
	s.subs[bucket] = fn
	s.mu.Unlock()
	t.Cleanup(func() {
		s.mu.Lock()
		delete(s.subs, bucket)
		s.mu.Unlock()
	})
}
