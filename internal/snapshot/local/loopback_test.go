package local

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// headerTap answers every request with 200 and an ETag, keeping the
// request's headers.
type headerTap struct {
	mu  sync.Mutex
	got []http.Header
}

func (h *headerTap) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	h.mu.Lock()
	h.got = append(h.got, req.Header.Clone())
	h.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{"Etag": {`"e"`}}, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
}

// Objects written to this machine's server carry no payload hash in
// their signature (nothing crosses a network, and the server would hash
// them again); written to another machine over plain HTTP they keep it.
func TestLoopbackWritesSkipPayloadHashes(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		loopback bool
	}{
		{"http://127.0.0.1:9000", true},
		{"http://[::1]:9000", true},
		{"http://localhost:9000", true},
		{"http://127.1.2.3:9000", true},
		{"http://10.0.0.5:9000", false},
		{"http://s3.example.com", false},
		{"https://s3.us-east-1.amazonaws.com", false},
	} {
		tap := &headerTap{}
		client := s3.New(s3.Options{
			BaseEndpoint: aws.String(tc.endpoint), Region: "us-east-1", UsePathStyle: true,
			Credentials: credentials.NewStaticCredentialsProvider("AK", "SK", ""),
			HTTPClient:  &http.Client{Transport: tap},
		})
		if got := loopbackEndpoint(client.Options()); got != tc.loopback {
			t.Errorf("%s: loopback %v, want %v", tc.endpoint, got, tc.loopback)
		}
		r := &Repo{s3: client, cfg: Config{Bucket: "b"}}
		if loopbackEndpoint(client.Options()) {
			r.putOpts = loopbackPut
		}
		if err := r.put(context.Background(), "index/x", []byte("sealed bytes"), false); err != nil {
			t.Fatalf("%s: put: %v", tc.endpoint, err)
		}
		if err := r.putPack(context.Background(), "x", []byte("sealed bytes")); err != nil {
			t.Fatalf("%s: put a pack: %v", tc.endpoint, err)
		}
		if len(tap.got) != 2 {
			t.Fatalf("%s: %d requests", tc.endpoint, len(tap.got))
		}
		for i, h := range tap.got {
			sha := h.Get("X-Amz-Content-Sha256")
			unsigned := strings.HasPrefix(sha, "UNSIGNED-PAYLOAD") || strings.HasPrefix(sha, "STREAMING-UNSIGNED-PAYLOAD")
			if tc.loopback && !unsigned {
				t.Errorf("%s: payload hash sent over loopback (request %d, headers %v)", tc.endpoint, i, h)
			}
			if !tc.loopback && strings.HasPrefix(tc.endpoint, "http:") && (unsigned || len(sha) != 64) {
				t.Errorf("%s: payload not signed over plain HTTP to another machine (request %d, headers %v)", tc.endpoint, i, h)
			}
		}
		// The pack asks the store to verify and keep a CRC32C.
		if h := tap.got[1]; h.Get("X-Amz-Checksum-Crc32c") == "" && !strings.EqualFold(h.Get("X-Amz-Trailer"), "x-amz-checksum-crc32c") {
			t.Errorf("%s: a pack sent without its CRC32C (headers %v)", tc.endpoint, h)
		}
	}
}
