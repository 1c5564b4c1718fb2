package s3server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// objectAPI is what both an SDK client and Direct offer.
type objectAPI interface {
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

var (
	_ objectAPI = (*s3.Client)(nil)
	_ objectAPI = (*Direct)(nil)
)

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestDirectAgreesWithHTTP writes with one path and reads with the other,
// in both directions: a record written in process must be what an S3
// client reads, with the ETag it will send back in If-Match.
func TestDirectAgreesWithHTTP(t *testing.T) {
	ctx := context.Background()
	paths := map[string]objectAPI{"http": client(), "direct": testServer.Direct()}
	for _, w := range []string{"http", "direct"} {
		for _, r := range []string{"http", "direct"} {
			t.Run(w+"-then-"+r, func(t *testing.T) {
				wc, rc := paths[w], paths[r]
				key := fmt.Sprintf("direct/%s-%s/rec.json", w, r)
				body := []byte(`{"state":"queued"}`)
				put, err := wc.PutObject(ctx, &s3.PutObjectInput{
					Bucket: aws.String("output"), Key: aws.String(key), Body: bytes.NewReader(body),
					ContentType: aws.String("application/json"), IfNoneMatch: aws.String("*"),
					Metadata: map[string]string{"Conveyor-Job": "j1"}, Tagging: aws.String("conveyor-finished=true"),
				})
				if err != nil {
					t.Fatalf("%s put: %v", w, err)
				}
				t.Cleanup(func() {
					client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("output"), Key: aws.String(key)})
				})
				get, err := rc.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("output"), Key: aws.String(key)})
				if err != nil {
					t.Fatalf("%s get: %v", r, err)
				}
				got, _ := io.ReadAll(get.Body)
				get.Body.Close()
				if !bytes.Equal(got, body) || aws.ToString(get.ETag) != aws.ToString(put.ETag) ||
					aws.ToString(get.ContentType) != "application/json" || get.Metadata["conveyor-job"] != "j1" {
					t.Errorf("%s read %q etag %s type %s meta %v; %s wrote %q etag %s", r, got, aws.ToString(get.ETag),
						aws.ToString(get.ContentType), get.Metadata, w, body, aws.ToString(put.ETag))
				}
				if !strings.HasPrefix(aws.ToString(put.ETag), `"`) {
					t.Errorf("%s put returned ETag %s, want it quoted as S3 does", w, aws.ToString(put.ETag))
				}
				tags, err := client().GetObjectTagging(ctx, &s3.GetObjectTaggingInput{Bucket: aws.String("output"), Key: aws.String(key)})
				if err != nil || len(tags.TagSet) != 1 || aws.ToString(tags.TagSet[0].Key) != "conveyor-finished" {
					t.Errorf("tags of what %s wrote: %+v, %v", w, tags, err)
				}
				head, err := rc.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("output"), Key: aws.String(key)})
				if err != nil || aws.ToString(head.ETag) != aws.ToString(put.ETag) {
					t.Errorf("%s head: %v etag %v", r, err, head)
				}

				// Conditions: both paths refuse the same writes the same way.
				_, err = rc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(key), Body: bytes.NewReader(body), IfNoneMatch: aws.String("*")})
				if apiCode(err) != "PreconditionFailed" {
					t.Errorf("%s create over an existing object: %v, want PreconditionFailed", r, err)
				}
				_, err = rc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(key), Body: bytes.NewReader(body), IfMatch: aws.String(`"0123"`)})
				if apiCode(err) != "PreconditionFailed" {
					t.Errorf("%s update with a stale ETag: %v, want PreconditionFailed", r, err)
				}
				upd, err := rc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(key), Body: strings.NewReader(`{"state":"running"}`), IfMatch: put.ETag})
				if err != nil {
					t.Fatalf("%s update with %s's ETag: %v", r, w, err)
				}
				_, err = wc.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("output"), Key: aws.String(key), IfMatch: put.ETag})
				if err == nil {
					t.Errorf("%s delete with a stale ETag succeeded", w)
				}
				if _, err := wc.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("output"), Key: aws.String(key), IfMatch: upd.ETag}); err != nil {
					t.Errorf("%s delete with the current ETag: %v", w, err)
				}
				_, err = rc.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("output"), Key: aws.String(key)})
				if apiCode(err) != "NoSuchKey" {
					t.Errorf("%s get after delete: %v, want NoSuchKey", r, err)
				}
				_, err = rc.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("output"), Key: aws.String(key)})
				if apiCode(err) != "NotFound" {
					t.Errorf("%s head after delete: %v, want NotFound", r, err)
				}
			})
		}
	}
}

// TestDirectListsAsHTTP pages through the same prefix both ways.
func TestDirectListsAsHTTP(t *testing.T) {
	ctx := context.Background()
	c := client()
	var want []string
	for i := 0; i < 7; i++ {
		k := fmt.Sprintf("direct-list/k%02d", i)
		if i == 5 {
			k = "direct-list/sub/k05"
		}
		want = append(want, k)
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(k), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("output"), Key: aws.String(k)}) })
	}
	slices.Sort(want)
	list := func(api objectAPI, delim string) (keys, prefixes []string) {
		in := &s3.ListObjectsV2Input{Bucket: aws.String("output"), Prefix: aws.String("direct-list/"), MaxKeys: aws.Int32(2)}
		if delim != "" {
			in.Delimiter = aws.String(delim)
		}
		p := s3.NewListObjectsV2Paginator(api, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range page.Contents {
				keys = append(keys, aws.ToString(o.Key))
				if o.LastModified == nil || aws.ToString(o.ETag) == "" {
					t.Errorf("listed %s without its time or ETag", aws.ToString(o.Key))
				}
			}
			for _, cp := range page.CommonPrefixes {
				prefixes = append(prefixes, aws.ToString(cp.Prefix))
			}
		}
		return keys, prefixes
	}
	for _, delim := range []string{"", "/"} {
		hk, hp := list(c, delim)
		dk, dp := list(testServer.Direct(), delim)
		if !slices.Equal(hk, dk) || !slices.Equal(hp, dp) {
			t.Errorf("delimiter %q: http lists %q %q, direct %q %q", delim, hk, hp, dk, dp)
		}
		if delim == "" && !slices.Equal(dk, want) {
			t.Errorf("direct lists %q, want %q", dk, want)
		}
	}
}

// TestDirectRacesHTTP: one conditional create in process and one over
// HTTP, at once, many times: exactly one wins each round.
func TestDirectRacesHTTP(t *testing.T) {
	ctx := context.Background()
	apis := []objectAPI{client(), testServer.Direct()}
	for round := 0; round < 200; round++ {
		key := fmt.Sprintf("direct-race/%d", round)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, api := range apis {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(key), Body: strings.NewReader(fmt.Sprint(i)), IfNoneMatch: aws.String("*")}
				if round%2 == 1 {
					// Through the engine instance that writes checksummed
					// objects: it must exclude the gateway's as well.
					in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
				}
				_, errs[i] = api.PutObject(ctx, in)
			}()
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			if err == nil {
				wins++
			} else if c := apiCode(err); c != "PreconditionFailed" && c != "ConditionalRequestConflict" {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d conditional creates won, want 1 (%v)", round, wins, errs)
		}
		client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("output"), Key: aws.String(key)})
	}
}

// TestDirectChecksummedWrite: a write through Direct that names a
// checksum algorithm is stored with that checksum, which the engine
// computed and which an SDK reading it over HTTP verifies; its ETag is
// derived from it ("CRC32C-<base64>", no MD5) and serves conditional
// writes on both paths; a checksum that does not match the body fails the
// write and leaves the object as it was.
func TestDirectChecksummedWrite(t *testing.T) {
	ctx := context.Background()
	d := testServer.Direct()
	key := "direct/checksummed.bin"
	t.Cleanup(func() {
		client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("output"), Key: aws.String(key)})
	})
	body := make([]byte, 300<<10)
	for i := range body {
		body[i] = byte(i*7 + i>>9)
	}
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	sum := base64.StdEncoding.EncodeToString(c[:])

	put, err := d.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(key), Body: bytes.NewReader(body),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c, IfNoneMatch: aws.String("*")})
	if err != nil {
		t.Fatal(err)
	}
	if want := `"CRC32C-` + sum + `"`; aws.ToString(put.ETag) != want {
		t.Fatalf("ETag %s, want %s", aws.ToString(put.ETag), want)
	}
	head, err := client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("output"), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(head.ChecksumCRC32C) != sum || aws.ToString(head.ETag) != aws.ToString(put.ETag) {
		t.Errorf("over HTTP: CRC32C %q ETag %s, want %q and %s", aws.ToString(head.ChecksumCRC32C), aws.ToString(head.ETag), sum, aws.ToString(put.ETag))
	}
	get, err := client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("output"), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(get.Body) // the SDK checks the stored CRC32C as it reads
	get.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back over HTTP: %d bytes, %v", len(got), err)
	}

	// A checksum the body does not match: refused, the object unchanged.
	other := bytes.Repeat([]byte("z"), 1000)
	_, err = d.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(key), Body: bytes.NewReader(other), ChecksumCRC32C: aws.String(sum)})
	if err == nil {
		t.Fatal("a write whose CRC32C does not match its body succeeded")
	}
	if h, err := client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("output"), Key: aws.String(key)}); err != nil || aws.ToInt64(h.ContentLength) != int64(len(body)) {
		t.Fatalf("after the refused write: %v, %v", h, err)
	}

	// The derived ETag serves conditions on both paths.
	if _, err := d.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(key), Body: bytes.NewReader(other),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c, IfMatch: aws.String(`"CRC32C-AAAAAA=="`)}); apiCode(err) != "PreconditionFailed" {
		t.Errorf("direct update with a stale ETag: %v, want PreconditionFailed", err)
	}
	upd, err := client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(key), Body: bytes.NewReader(other), IfMatch: put.ETag})
	if err != nil {
		t.Fatalf("HTTP update with the derived ETag: %v", err)
	}
	if e := strings.Trim(aws.ToString(upd.ETag), `"`); len(e) != 32 {
		t.Errorf("an HTTP write's ETag is %s, want an MD5 as before", aws.ToString(upd.ETag))
	}
}

func TestDirectRefusesUnstoredKeys(t *testing.T) {
	d := testServer.Direct()
	for _, k := range []string{"a/../b", "./b", "a//b", "/b", ""} {
		_, err := d.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(k), Body: strings.NewReader("x")})
		if err == nil {
			t.Errorf("Direct put of key %q: no error", k)
		}
	}
}

// BenchmarkPut compares one 1 KiB PUT over the S3 API (SDK, SigV4, HTTP on
// loopback) with the same PUT in process.
func BenchmarkPut(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	for _, p := range []struct {
		name string
		api  objectAPI
	}{{"http", client()}, {"direct", testServer.Direct()}} {
		b.Run(p.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := p.api.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String("bench/put-" + p.name), Body: bytes.NewReader(body)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
