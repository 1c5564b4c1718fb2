package s3server

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/s3response"
)

// listingBackend is the posix backend with one shortcut in listings.
//
// The posix backend lists a prefix by reading the directory the prefix
// names up to its last slash; when that directory does not exist, it walks
// the bucket from its root instead, through every directory on the way to
// the prefix. A worker lists "<key>/" before publishing a job's outputs,
// and for a key never processed before that directory is absent: each such
// listing walked the folder the key sits in, so a job's cost grew with the
// number of keys processed beside it (17% of the CPU of a 3,000-job run
// with every key in one folder).
//
// No object can have a key under "a/b/" unless the directory "a/b" exists
// in the bucket (the backend stores an object at bucket/key), so when it
// does not, the listing is empty and is answered without a walk. Anything
// the shortcut is not sure of (a prefix that is not a clean relative path,
// an unreadable directory, a missing bucket) goes to the backend unchanged.
type listingBackend struct {
	*posix.Posix
	root string // the data dir, absolute: each bucket is a directory in it
}

// absentPrefixDir reports whether prefix names, up to its last slash, a
// directory that does not exist in bucket (which does exist).
func (b listingBackend) absentPrefixDir(bucket, prefix string) bool {
	i := strings.LastIndex(prefix, "/")
	if i <= 0 {
		return false
	}
	dir := prefix[:i]
	if strings.Contains(bucket, "/") || !fs.ValidPath(bucket) || !fs.ValidPath(dir) || path.Clean(dir) != dir {
		return false
	}
	fi, err := os.Stat(filepath.Join(b.root, bucket, filepath.FromSlash(dir)))
	switch {
	case err == nil:
		return !fi.IsDir() // an object's name: nothing can be under it
	case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
		return false
	}
	bi, err := os.Stat(filepath.Join(b.root, bucket))
	return err == nil && bi.IsDir()
}

func (b listingBackend) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input) (s3response.ListObjectsV2Result, error) {
	if in.Bucket == nil || in.Prefix == nil || !b.absentPrefixDir(*in.Bucket, *in.Prefix) {
		return b.Posix.ListObjectsV2(ctx, in)
	}
	var maxKeys, zero int32
	if in.MaxKeys != nil {
		maxKeys = *in.MaxKeys
	}
	truncated := false
	return s3response.ListObjectsV2Result{
		Name:              in.Bucket,
		Prefix:            in.Prefix,
		StartAfter:        in.StartAfter,
		ContinuationToken: in.ContinuationToken,
		Delimiter:         in.Delimiter,
		MaxKeys:           &maxKeys,
		KeyCount:          &zero,
		IsTruncated:       &truncated,
	}, nil
}

func (b listingBackend) ListObjects(ctx context.Context, in *s3.ListObjectsInput) (s3response.ListObjectsResult, error) {
	if in.Bucket == nil || in.Prefix == nil || !b.absentPrefixDir(*in.Bucket, *in.Prefix) {
		return b.Posix.ListObjects(ctx, in)
	}
	var maxKeys int32
	if in.MaxKeys != nil {
		maxKeys = *in.MaxKeys
	}
	truncated := false
	return s3response.ListObjectsResult{
		Name:        in.Bucket,
		Prefix:      in.Prefix,
		Marker:      in.Marker,
		Delimiter:   in.Delimiter,
		MaxKeys:     &maxKeys,
		IsTruncated: &truncated,
	}, nil
}
