package s3server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// A body sent aws-chunked (as SDKs stream unseekable bodies) carries its
// real size in x-amz-decoded-content-length; Content-Length counts the
// framing too. The SDK only does this over TLS, so the request is built
// here by hand.
func TestPutObjectChunkedReportsDecodedSize(t *testing.T) {
	t.Parallel()
	const key = "chunked/stream.txt"
	data := strings.Repeat("0123456789", 1000)
	sum := make([]byte, 4)
	binary.BigEndian.PutUint32(sum, crc32.ChecksumIEEE([]byte(data)))
	body := fmt.Sprintf("%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n", len(data), data, base64.StdEncoding.EncodeToString(sum))

	const payload = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	req, err := http.NewRequest(http.MethodPut, testServer.Endpoint()+"/"+testBucket+"/"+key, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Encoding", "aws-chunked")
	req.Header.Set("X-Amz-Content-Sha256", payload)
	req.Header.Set("X-Amz-Decoded-Content-Length", fmt.Sprint(len(data)))
	req.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
	creds := aws.Credentials{AccessKeyID: testAccessKey, SecretAccessKey: testSecretKey}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, payload, "s3", DefaultRegion, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}

	_, evs := testEvents.forKey(t, testBucket, key)
	if len(evs) != 1 {
		t.Fatalf("want 1 event, got %+v", evs)
	}
	if evs[0].Size != int64(len(data)) || req.ContentLength == int64(len(data)) {
		t.Errorf("event size %d, want %d (Content-Length %d)", evs[0].Size, len(data), req.ContentLength)
	}
}
