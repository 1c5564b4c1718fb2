package s3server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestListingAbsentPrefixDirs checks listings whose prefix names a
// directory that does not exist (answered without a walk) beside ones that
// do, both over HTTP and in process, in every shape that could go wrong: a
// prefix that is an object's name, a directory object, a partial last
// segment, paging, delimiters and a missing bucket.
func TestListingAbsentPrefixDirs(t *testing.T) {
	ctx := context.Background()
	c := client()
	const b = "output"
	base := "listing-absent/"
	keys := []string{"a/b/c.txt", "a/b/d/e.txt", "a/bb.txt", "f", "dir/"}
	for _, k := range keys {
		body := "x"
		if strings.HasSuffix(k, "/") {
			body = "" // a directory object holds no data
		}
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b), Key: aws.String(base + k), Body: strings.NewReader(body)}); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	t.Cleanup(func() {
		for _, k := range keys {
			c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b), Key: aws.String(base + k)})
		}
	})
	list := func(api objectAPI, prefix, delim string, max int32) (keys, prefixes []string) {
		t.Helper()
		in := &s3.ListObjectsV2Input{Bucket: aws.String(b), Prefix: aws.String(base + prefix)}
		if delim != "" {
			in.Delimiter = aws.String(delim)
		}
		if max > 0 {
			in.MaxKeys = aws.Int32(max)
		}
		p := s3.NewListObjectsV2Paginator(api, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("list %q: %v", prefix, err)
			}
			for _, o := range page.Contents {
				keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), base))
			}
			for _, cp := range page.CommonPrefixes {
				prefixes = append(prefixes, strings.TrimPrefix(aws.ToString(cp.Prefix), base))
			}
		}
		return keys, prefixes
	}
	// The setup really has the directories the cases rely on.
	if k, _ := list(c, "a/", "", 0); len(k) != 3 {
		t.Fatalf("setup: a/ holds %q, want 3 objects", k)
	}
	for _, tc := range []struct {
		prefix, delim string
		max           int32
		keys, cps     []string
	}{
		{prefix: "a/b/", keys: []string{"a/b/c.txt", "a/b/d/e.txt"}},
		{prefix: "a/b/", max: 1, keys: []string{"a/b/c.txt", "a/b/d/e.txt"}},
		{prefix: "a/b/", delim: "/", keys: []string{"a/b/c.txt"}, cps: []string{"a/b/d/"}},
		{prefix: "a/b", keys: []string{"a/b/c.txt", "a/b/d/e.txt", "a/bb.txt"}},
		{prefix: "a/b/c", keys: []string{"a/b/c.txt"}},
		{prefix: "a/zz/"},         // absent directory beside present ones
		{prefix: "a/zz/deeper/x"}, // absent, several levels
		{prefix: "q/r/"},          // absent first level
		{prefix: "f/"},            // an object's name, not a directory
		{prefix: "a/bb.txt/"},     // an object's name inside a directory
		{prefix: "dir/", keys: []string{"dir/"}},
	} {
		for name, api := range map[string]objectAPI{"http": c, "direct": testServer.Direct()} {
			gotKeys, gotCPs := list(api, tc.prefix, tc.delim, tc.max)
			if !slices.Equal(gotKeys, tc.keys) || !slices.Equal(gotCPs, tc.cps) {
				t.Errorf("%s: list prefix %q delimiter %q max %d: keys %q prefixes %q, want %q %q",
					name, tc.prefix, tc.delim, tc.max, gotKeys, gotCPs, tc.keys, tc.cps)
			}
		}
	}
	_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("no-such-bucket-here"), Prefix: aws.String("a/b/")})
	if apiCode(err) != "NoSuchBucket" {
		t.Errorf("listing a missing bucket with an absent prefix dir: %v, want NoSuchBucket", err)
	}
}

func TestAbsentPrefixDir(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"bkt/a/b", "bkt/dir"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "bkt/a/file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := listingBackend{root: root}
	for _, tc := range []struct {
		bucket, prefix string
		absent         bool
	}{
		{"bkt", "a/b/", false},
		{"bkt", "a/b/x", false},
		{"bkt", "a/zz/", true},
		{"bkt", "zz/yy/x", true},
		{"bkt", "a/file/", true}, // an object, not a directory
		{"bkt", "a", false},      // no slash: the walk starts at the root anyway
		{"bkt", "/a/", false},    // not a clean relative path: the backend decides
		{"bkt", "a//zz/", false},
		{"bkt", "a/../zz/", false},
		{"bkt", "./zz/", false},
		{"nobkt", "zz/", false}, // the backend answers NoSuchBucket
		{"../bkt", "zz/", false},
	} {
		if got := b.absentPrefixDir(tc.bucket, tc.prefix); got != tc.absent {
			t.Errorf("absentPrefixDir(%q, %q) = %v, want %v", tc.bucket, tc.prefix, got, tc.absent)
		}
	}
}

// BenchmarkListNewKeyOutputs lists "<key>/" for keys never processed in a
// folder where 3,000 keys have outputs: what a worker does before
// publishing a new key's outputs. "walk" is the backend without the
// shortcut.
func BenchmarkListNewKeyOutputs(b *testing.B) {
	ctx := context.Background()
	c := client()
	const n = 3000
	base := "bench-outputs/"
	for i := 0; i < n; i++ {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("output"), Key: aws.String(fmt.Sprintf("%s%05d.bin/report.json", base, i)), Body: strings.NewReader("x")}); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range []struct {
		name string
		list func(*s3.ListObjectsV2Input) (int, error)
	}{
		{"walk", func(in *s3.ListObjectsV2Input) (int, error) {
			out, err := testServer.be.Posix.ListObjectsV2(ctx, in)
			return len(out.Contents), err
		}},
		{"shortcut", func(in *s3.ListObjectsV2Input) (int, error) {
			out, err := testServer.be.ListObjectsV2(ctx, in)
			return len(out.Contents), err
		}},
	} {
		b.Run(p.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				in := &s3.ListObjectsV2Input{Bucket: aws.String("output"), Prefix: aws.String(fmt.Sprintf("%snew-%05d.bin/", base, i%n)),
					Delimiter: aws.String("/"), MaxKeys: aws.Int32(1000), StartAfter: aws.String("")}
				if got, err := p.list(in); err != nil || got != 0 {
					b.Fatalf("list: %v, %d objects", err, got)
				}
			}
		})
	}
}
