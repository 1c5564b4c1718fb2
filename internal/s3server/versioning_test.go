package s3server

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/conveyorhq/conveyor/internal/s3event"
)

// headVersion is the version ID HEAD reports for the current object.
func headVersion(t *testing.T, c *s3.Client, bucket, key string) (version, etag string) {
	t.Helper()
	head, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("HEAD %s/%s: %v", bucket, key, err)
	}
	return aws.ToString(head.VersionId), s3event.TrimETag(aws.ToString(head.ETag))
}

// lastEvent returns the newest event about bucket/key and checks that
// there are want of them.
func lastEvent(t *testing.T, bucket, key string, want int) s3event.ObjectCreated {
	t.Helper()
	docs, evs := testEvents.forKey(t, bucket, key)
	if len(evs) != want {
		t.Fatalf("want %d events for %q, got %d: %q", want, key, len(evs), docs)
	}
	return evs[want-1]
}

// Each way of creating an object in a versioned bucket reports the version
// it created: the one HEAD returns just after.
func TestVersionIDInEveryEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	const key, src = "versions/every kind é.txt", "versions/copy source.txt"
	seen := map[string]string{}
	check := func(n int, name, respVersion string) {
		t.Helper()
		ev := lastEvent(t, testBucket, key, n)
		head, etag := headVersion(t, c, testBucket, key)
		if ev.EventName != name || ev.VersionID != head || ev.VersionID != respVersion || ev.ETag != etag {
			t.Errorf("%s: event %s version %q etag %q; response version %q; HEAD version %q etag %q",
				name, ev.EventName, ev.VersionID, ev.ETag, respVersion, head, etag)
		}
		if head == "" || head == "null" {
			t.Errorf("%s: version %q is not a real version ID", name, head)
		}
		if prev, ok := seen[head]; ok {
			t.Errorf("%s: version %q already given by %s", name, head, prev)
		}
		seen[head] = name
	}

	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader("X")})
	if err != nil {
		t.Fatal(err)
	}
	check(1, EventPut, aws.ToString(put.VersionId))

	mpu, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	part, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(testBucket), Key: aws.String(key), UploadId: mpu.UploadId,
		PartNumber: aws.Int32(1), Body: strings.NewReader("Y")})
	if err != nil {
		t.Fatal(err)
	}
	done, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(key), UploadId: mpu.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{ETag: part.ETag, PartNumber: aws.Int32(1)}}}})
	if err != nil {
		t.Fatal(err)
	}
	check(2, EventComplete, aws.ToString(done.VersionId))

	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(src), Body: strings.NewReader("X")}); err != nil {
		t.Fatal(err)
	}
	cp, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key),
		CopySource: aws.String(testBucket + "/" + s3event.EncodeKey(src))})
	if err != nil {
		t.Fatal(err)
	}
	check(3, EventCopy, aws.ToString(cp.VersionId))
	testEvents.forKey(t, testBucket, src) // forgotten at the end

	// Every version is still there, the newest first.
	vs, err := c.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String(testBucket), Prefix: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range vs.Versions {
		if aws.ToString(v.Key) != key {
			continue
		}
		if _, ok := seen[aws.ToString(v.VersionId)]; ok {
			n++
		}
	}
	if n < len(seen) {
		t.Errorf("ListObjectVersions lists %d of the %d versions: %+v", n, len(seen), vs.Versions)
	}
}

// A data dir written by a Conveyor without versioning (storeLegacyObject,
// run before the shared server) is opened with the input bucket versioned:
// what it held stays readable as version "null", and new uploads get
// version IDs.
func TestVersioningSwitchedOnForExistingBucket(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()

	vc, err := c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(testBucket)})
	if err != nil {
		t.Fatal(err)
	}
	if vc.Status != types.BucketVersioningStatusEnabled {
		t.Errorf("versioning of %s is %q, want Enabled", testBucket, vc.Status)
	}
	if vc, err := c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String("output")}); err != nil || vc.Status != "" {
		t.Errorf("versioning of output (not in Versioned) is %q, %v; want none", vc.Status, err)
	}

	// The old object: HEAD, GET, GET of version "null", listings.
	version, etag := headVersion(t, c, testBucket, legacyKey)
	if etag != legacyETag || (version != "" && version != "null") {
		t.Errorf("HEAD of the old object: version %q etag %q, want no version (or null) and %q", version, etag, legacyETag)
	}
	for _, v := range []*string{nil, aws.String("null")} {
		get, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(legacyKey), VersionId: v})
		if err != nil {
			t.Fatalf("GET old object (version %v): %v", aws.ToString(v), err)
		}
		body, err := io.ReadAll(get.Body)
		get.Body.Close()
		if err != nil || string(body) != legacyBody {
			t.Errorf("GET old object (version %v) = %q, %v", aws.ToString(v), body, err)
		}
	}
	list, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String(legacyKey)})
	if err != nil || len(list.Contents) != 1 || s3event.TrimETag(aws.ToString(list.Contents[0].ETag)) != legacyETag {
		t.Errorf("ListObjectsV2 of the old object: %+v, %v", list, err)
	}
	vs, err := c.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String(testBucket), Prefix: aws.String(legacyKey)})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.Versions) != 1 || aws.ToString(vs.Versions[0].VersionId) != "null" || !aws.ToBool(vs.Versions[0].IsLatest) {
		t.Errorf("versions of the old object: %+v, want one, null and latest", vs.Versions)
	}

	// A new upload to a key of the old bucket gets a real version ID.
	const key = "legacy/after versioning.txt"
	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader("new")})
	if err != nil {
		t.Fatal(err)
	}
	ev := lastEvent(t, testBucket, key, 1)
	if v := aws.ToString(put.VersionId); v == "" || v == "null" || ev.VersionID != v {
		t.Errorf("PUT after versioning: version %q, event version %q", v, ev.VersionID)
	}
	if head, _ := headVersion(t, c, testBucket, key); head != ev.VersionID {
		t.Errorf("HEAD version %q, event version %q", head, ev.VersionID)
	}

	// The versions live beside the data dir, not in it, and are no bucket.
	// Overwriting the key gives it an older version to keep there (the
	// test must not rely on another test having overwritten one).
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader("newer")}); err != nil {
		t.Fatal(err)
	}
	vdir := testServer.cfg.VersionsDir()
	if st, err := os.Stat(filepath.Join(vdir, testBucket)); err != nil || !st.IsDir() {
		t.Errorf("no versions of %s under %s: %v", testBucket, vdir, err)
	}
	if rel, err := filepath.Rel(testServer.cfg.DataDir, vdir); err != nil || !strings.HasPrefix(rel, "..") {
		t.Errorf("versions dir %s is inside the data dir %s", vdir, testServer.cfg.DataDir)
	}
	buckets, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range buckets.Buckets {
		if strings.Contains(aws.ToString(b.Name), "version") {
			t.Errorf("ListBuckets lists %q", aws.ToString(b.Name))
		}
	}
}

// Overwriting an object stored before versioning keeps it as version
// "null" beside the new version.
func TestOverwriteOfObjectStoredBeforeVersioning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(legacyOverwrittenKey), Body: strings.NewReader("newer")})
	if err != nil {
		t.Fatal(err)
	}
	ev := lastEvent(t, testBucket, legacyOverwrittenKey, 1)
	if v := aws.ToString(put.VersionId); v == "" || v == "null" || ev.VersionID != v {
		t.Errorf("overwrite: version %q, event version %q", v, ev.VersionID)
	}
	get, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(legacyOverwrittenKey), VersionId: aws.String("null")})
	if err != nil {
		t.Fatalf("GET version null after the overwrite: %v", err)
	}
	body, err := io.ReadAll(get.Body)
	get.Body.Close()
	if err != nil || string(body) != legacyBody {
		t.Errorf("GET version null = %q, %v; want %q", body, err, legacyBody)
	}
	vs, err := c.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String(testBucket), Prefix: aws.String(legacyOverwrittenKey)})
	if err != nil {
		t.Fatal(err)
	}
	var null, latest bool
	for _, v := range vs.Versions {
		switch aws.ToString(v.VersionId) {
		case "null":
			null = !aws.ToBool(v.IsLatest)
		case ev.VersionID:
			latest = aws.ToBool(v.IsLatest)
		}
	}
	if !null || !latest {
		t.Errorf("versions %+v: want null (not latest) and %s (latest)", vs.Versions, ev.VersionID)
	}
}
