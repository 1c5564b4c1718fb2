package worker

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/conveyorhq/conveyor/internal/job"
)

// errStalled is the cause a transfer is cancelled with when no byte moved
// for Config.StallTimeout.
var errStalled = errors.New("transfer stalled")

// watchdog cancels a transfer that makes no progress for a while. Every
// byte read through it counts as progress.
type watchdog struct {
	last   atomic.Int64 // unix nanos of the last progress
	cancel context.CancelCauseFunc
	stop   chan struct{}
}

// newWatchdog returns a context that is cancelled with errStalled when
// touch has not been called for stall, and a function that ends the watch.
func newWatchdog(ctx context.Context, stall time.Duration) (context.Context, *watchdog, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	wd := &watchdog{cancel: cancel, stop: make(chan struct{})}
	wd.touch()
	go func() {
		t := time.NewTicker(max(stall/4, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-wd.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if idle := time.Since(time.Unix(0, wd.last.Load())); idle >= stall {
					cancel(fmt.Errorf("%w: no data for %s", errStalled, idle.Round(time.Second)))
					return
				}
			}
		}
	}()
	return ctx, wd, func() { close(wd.stop); cancel(nil) }
}

func (wd *watchdog) touch() { wd.last.Store(time.Now().UnixNano()) }

// progressReader notes progress on every read.
type progressReader struct {
	r  io.Reader
	wd *watchdog
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.wd.touch()
	}
	return n, err
}

// fileBody is an output file as an upload body: ReaderAt and ReadSeeker,
// so the uploader reads parts in place, and every read is progress.
type fileBody struct {
	f  *os.File
	wd *watchdog
}

func (b fileBody) Read(p []byte) (int, error) {
	n, err := b.f.Read(p)
	if n > 0 {
		b.wd.touch()
	}
	return n, err
}

func (b fileBody) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.f.ReadAt(p, off)
	if n > 0 {
		b.wd.touch()
	}
	return n, err
}

func (b fileBody) Seek(off int64, whence int) (int64, error) { return b.f.Seek(off, whence) }

// fetch streams the exact input version the job names to path, hashing it
// on the way, and checks that what arrived is that version: the version ID
// and ETag the store answered with, the length, and the MD5 when the ETag
// is one. A transfer that stalls for Config.StallTimeout fails.
func (w *Worker) fetch(ctx context.Context, rec *job.Record, path string) (int64, string, error) {
	ctx, wd, done := newWatchdog(ctx, w.cfg.StallTimeout)
	defer done()
	in := &s3.GetObjectInput{Bucket: &rec.Bucket, Key: &rec.Key}
	versioned := rec.VersionID != "" && rec.VersionID != "null"
	if versioned {
		in.VersionId = &rec.VersionID
	} else if rec.ETag != "" {
		in.IfMatch = aws.String(`"` + rec.ETag + `"`)
	}
	out, err := w.objects().GetObject(ctx, in)
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			switch ae.ErrorCode() {
			case "PreconditionFailed", "NoSuchKey", "NoSuchVersion":
				// Gone or replaced since the job was created: is it still
				// the current version at all?
				if cerr := w.checkCurrent(context.WithoutCancel(ctx), rec); cerr != nil {
					return 0, "", cerr
				}
				return 0, "", fmt.Errorf("%w (%s)", errInputChanged, ae.ErrorCode())
			}
		}
		return 0, "", fmt.Errorf("fetch input: %w", transferErr(ctx, err))
	}
	defer out.Body.Close()
	if versioned && aws.ToString(out.VersionId) != rec.VersionID {
		return 0, "", fmt.Errorf("%w: asked for version %s, got %q", errInputChanged, rec.VersionID, aws.ToString(out.VersionId))
	}
	etag := strings.Trim(aws.ToString(out.ETag), `"`)
	if rec.ETag != "" && etag != "" && etag != rec.ETag {
		return 0, "", fmt.Errorf("%w: ETag %s, the job names %s", errInputChanged, etag, rec.ETag)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, "", fmt.Errorf("write input to volume: %w", err)
	}
	h := sha256.New()
	var md hash.Hash
	if sse := out.ServerSideEncryption; isMD5(etag) && (sse == "" || sse == types.ServerSideEncryptionAes256) {
		md = md5.New()
	}
	dst := io.MultiWriter(f, h)
	if md != nil {
		dst = io.MultiWriter(f, h, md)
	}
	n, err := io.Copy(dst, progressReader{out.Body, wd})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, "", fmt.Errorf("fetch input: %w", transferErr(ctx, err))
	}
	if want := aws.ToInt64(out.ContentLength); out.ContentLength != nil && n != want {
		return n, "", fmt.Errorf("%w: got %d bytes of %d", errInputChanged, n, want)
	}
	if md != nil && hex.EncodeToString(md.Sum(nil)) != etag {
		return n, "", fmt.Errorf("%w: the bytes' MD5 is not the ETag %s", errInputChanged, etag)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// transferErr names a stall as the cause, rather than "context canceled".
func transferErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) || errors.Is(cause, errLeaseLost) {
		return cause
	}
	return err
}

// isMD5 reports whether an ETag has the shape of a plain MD5, as S3 gives
// single-part uploads stored unencrypted or with SSE-S3; the fetched bytes
// are then checked against it.
func isMD5(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	_, err := hex.DecodeString(etag)
	return err == nil
}
