package s3server

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/conveyorhq/conveyor/internal/s3event"
)

// ignoreVolatile leaves out what a test cannot predict.
var ignoreVolatile = cmpopts.IgnoreFields(s3event.ObjectCreated{}, "EventTime", "Sequencer")

func TestPutObjectEmitsOneEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	const key = "put/dir/a b+c é.txt"
	body := []byte("hello, conveyor")

	out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}

	docs, evs := testEvents.forKey(t, testBucket, key)
	if len(evs) != 1 {
		t.Fatalf("want exactly 1 event for %q, got %d: %q", key, len(evs), docs)
	}
	want := s3event.ObjectCreated{
		EventName: "ObjectCreated:Put",
		Bucket:    testBucket,
		Key:       key,
		Size:      int64(len(body)),
		ETag:      s3event.TrimETag(aws.ToString(out.ETag)),
		VersionID: aws.ToString(out.VersionId),
	}
	if diff := cmp.Diff(want, evs[0], ignoreVolatile); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if want.ETag == "" {
		t.Error("PutObject returned no ETag")
	}

	// The wire shape, field by field, as a Lambda would read it.
	rec := record(t, docs[0])
	if v, _ := rec["eventVersion"].(string); !strings.HasPrefix(v, "2.") {
		t.Errorf("eventVersion = %q, want 2.x", v)
	}
	for _, f := range []struct {
		path []string
		want any
	}{
		{[]string{"eventSource"}, "aws:s3"},
		{[]string{"eventName"}, "ObjectCreated:Put"},
		{[]string{"awsRegion"}, DefaultRegion},
		{[]string{"s3", "bucket", "name"}, testBucket},
		{[]string{"s3", "object", "key"}, s3event.EncodeKey(key)},
		{[]string{"s3", "object", "size"}, float64(len(body))},
		{[]string{"s3", "object", "eTag"}, want.ETag},
	} {
		if got := field(t, rec, f.path...); got != f.want {
			t.Errorf("%s = %v, want %v", strings.Join(f.path, "."), got, f.want)
		}
	}
	if enc := field(t, rec, "s3", "object", "key").(string); strings.ContainsAny(enc, " +é") && enc != s3event.EncodeKey(key) {
		t.Errorf("key %q is not URL-encoded", enc)
	}
}

func TestSequencerIncreases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	var seqs []string
	for i, key := range []string{"seq/first", "seq/second"} {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
		_, evs := testEvents.forKey(t, testBucket, key)
		if len(evs) != 1 {
			t.Fatalf("want 1 event for %q, got %d", key, len(evs))
		}
		seqs = append(seqs, evs[0].Sequencer)
	}
	a, errA := strconv.ParseUint(seqs[0], 16, 64)
	b, errB := strconv.ParseUint(seqs[1], 16, 64)
	if errA != nil || errB != nil || len(seqs[0]) != 16 || len(seqs[1]) != 16 {
		t.Fatalf("sequencers %q are not 16 hex digits", seqs)
	}
	if !(a < b) || !(seqs[0] < seqs[1]) {
		t.Errorf("sequencers %q do not increase", seqs)
	}
}

func TestMultipartUploadEmitsOneCompleteEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	const key = "multipart/big file+1.bin"
	const partSize = 5 << 20

	mpu, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	var parts []types.CompletedPart
	for i := int32(1); i <= 2; i++ {
		up, err := c.UploadPart(ctx, &s3.UploadPartInput{
			Bucket:     aws.String(testBucket),
			Key:        aws.String(key),
			UploadId:   mpu.UploadId,
			PartNumber: aws.Int32(i),
			Body:       bytes.NewReader(bytes.Repeat([]byte{byte('a' + i)}, partSize)),
		})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, types.CompletedPart{ETag: up.ETag, PartNumber: aws.Int32(i)})
	}
	if docs, _ := testEvents.forKey(t, testBucket, key); len(docs) != 0 {
		t.Fatalf("CreateMultipartUpload/UploadPart emitted %d events: %q", len(docs), docs)
	}

	done, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(testBucket),
		Key:             aws.String(key),
		UploadId:        mpu.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, evs := testEvents.forKey(t, testBucket, key)
	if len(evs) != 1 {
		t.Fatalf("want exactly 1 event, got %d: %q", len(evs), docs)
	}
	want := s3event.ObjectCreated{
		EventName: "ObjectCreated:CompleteMultipartUpload",
		Bucket:    testBucket,
		Key:       key,
		Size:      0, // unknown to the hook: the orchestrator HEADs
		ETag:      s3event.TrimETag(aws.ToString(done.ETag)),
		VersionID: aws.ToString(done.VersionId),
	}
	if diff := cmp.Diff(want, evs[0], ignoreVolatile); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if !strings.HasSuffix(want.ETag, "-2") {
		t.Errorf("multipart ETag %q does not end in -2", want.ETag)
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	if got := s3event.TrimETag(aws.ToString(head.ETag)); got != want.ETag {
		t.Errorf("HEAD ETag %q, event ETag %q", got, want.ETag)
	}
	if got := aws.ToInt64(head.ContentLength); got != 2*partSize {
		t.Errorf("HEAD size %d, want %d", got, 2*partSize)
	}
}

func TestCopyObjectEmitsCopyEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	const src, dst = "copy/source é.txt", "copy/dest+1 é.txt"
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(src), Body: strings.NewReader("copy me")}); err != nil {
		t.Fatal(err)
	}
	out, err := c.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket:     aws.String("output"),
		Key:        aws.String(dst),
		CopySource: aws.String(testBucket + "/" + s3event.EncodeKey(src)),
	})
	if err != nil {
		t.Fatal(err)
	}

	docs, evs := testEvents.forKey(t, "output", dst)
	if len(evs) != 1 {
		t.Fatalf("want exactly 1 event for the copy, got %d: %q", len(evs), docs)
	}
	want := s3event.ObjectCreated{
		EventName: "ObjectCreated:Copy",
		Bucket:    "output",
		Key:       dst,
		ETag:      s3event.TrimETag(aws.ToString(out.CopyObjectResult.ETag)),
		VersionID: aws.ToString(out.VersionId),
	}
	if diff := cmp.Diff(want, evs[0], ignoreVolatile); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if want.ETag == "" {
		t.Error("CopyObject returned no ETag")
	}
	if _, evs := testEvents.forKey(t, testBucket, src); len(evs) != 1 || evs[0].EventName != "ObjectCreated:Put" {
		t.Errorf("source events = %+v, want its one Put", evs)
	}
}

func TestRequestsThatCreateNoObjectEmitNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	const key = "quiet/tagged"
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObjectTagging(ctx, &s3.PutObjectTaggingInput{
		Bucket:  aws.String(testBucket),
		Key:     aws.String(key),
		Tagging: &types.Tagging{TagSet: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)}); err != nil {
		t.Fatal(err)
	}
	if _, evs := testEvents.forKey(t, testBucket, key); len(evs) != 1 {
		t.Errorf("want only the Put's event, got %+v", evs)
	}

	// Bucket-level PUT: the bucket name is the whole path.
	if err := ensureBuckets(ctx, c, []string{"quiet-bucket"}); err != nil {
		t.Fatal(err)
	}
	testEvents.mu.Lock()
	defer testEvents.mu.Unlock()
	for _, doc := range testEvents.docs {
		if bytes.Contains(doc, []byte("quiet-bucket")) {
			t.Errorf("CreateBucket emitted %s", doc)
		}
	}
}

func TestEnsureBucketsIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	for range 2 {
		if err := ensureBuckets(ctx, c, []string{testBucket, "output", "again"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("again")}); err != nil {
		t.Fatal(err)
	}
}
