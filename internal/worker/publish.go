package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Publishing keeps one rule: only the attempt that holds the job, for the
// input version that is current, writes the outputs of a key; an attempt
// that cannot prove both publishes nothing, and an older version's write
// can never replace a newer one's.
//
// Each output object is written with a conditional PUT against the ETag
// it had (If-Match) or its absence (If-None-Match: *), as listed *before*
// the input's current version was checked. A newer version's job can only
// have written that object after its version was uploaded, so after the
// check that found this version current; its write changed the ETag, and
// the older write fails with 412 instead of replacing it. Stale outputs are
// removed the same way (list, check current, conditional DELETE), and a
// version found no longer current after its writes takes back what it
// wrote, so nothing older stays once the newest version has published.

// publishTries bounds the conditional writes of one output that keep
// meeting another writer's object while this version stays current.
const publishTries = 4

// supersededError ends an attempt whose input version is no longer current.
type supersededError struct{ reason string }

func (e *supersededError) Error() string { return "superseded: " + e.reason }

// errStoreConflict is a path the object store cannot hold although S3
// could (the embedded server keeps keys as file paths): permanent.
var errStoreConflict = errors.New("the object store cannot hold this output path")

// outputFile is one file the processor left, opened without following
// symbolic links.
type outputFile struct {
	rel  string
	path string
	size int64
}

// collectOutputs lists the regular files under dir. Symbolic links,
// devices, FIFOs and sockets are skipped with a note in the log: a
// processor must not publish anything outside its output directory.
func collectOutputs(dir string, logf io.Writer) ([]outputFile, error) {
	var files []outputFile
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		if !d.Type().IsRegular() {
			fmt.Fprintf(logf, "=== conveyor: skipped %s: not a regular file\n", job.Printable(rel))
			return nil
		}
		files = append(files, outputFile{rel: filepath.ToSlash(rel), path: path})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list outputs: %w", err)
	}
	return files, nil
}

// openOutput opens an output file for reading without following a
// symbolic link (one swapped in after the listing) and checks that it is
// still a regular file.
func openOutput(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open output: %w", err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("output %s is not a regular file", job.Printable(filepath.Base(path)))
	}
	return f, fi.Size(), nil
}

// checkCurrent returns a *supersededError when rec's input version is no
// longer the key's current version (or the key was deleted).
func (w *Worker) checkCurrent(ctx context.Context, rec *job.Record) error {
	head, err := w.objects().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &rec.Bucket, Key: &rec.Key})
	if isCode(err, "NotFound", "NoSuchKey", "MethodNotAllowed") {
		return &supersededError{reason: "the input was deleted"}
	}
	if err != nil {
		return fmt.Errorf("check the input's current version: %w", err)
	}
	version := aws.ToString(head.VersionId)
	etag := strings.Trim(aws.ToString(head.ETag), `"`)
	versioned := rec.VersionID != "" && rec.VersionID != "null"
	switch {
	case versioned && version == rec.VersionID:
		return nil
	case !versioned && (version == "" || version == "null") && etag == rec.ETag:
		return nil
	case version != "" && version != "null":
		return &supersededError{reason: "version " + version + " of the input is current"}
	default:
		return &supersededError{reason: "the input was overwritten (ETag " + etag + ")"}
	}
}

// outputs lists the current output objects of rec's key: key -> ETag.
func (w *Worker) outputs(ctx context.Context, rec *job.Record) (map[string]string, error) {
	prefix := job.OutputPrefix(rec.Key)
	found := map[string]string{}
	p := s3.NewListObjectsV2Paginator(w.objects(), &s3.ListObjectsV2Input{Bucket: &w.cfg.OutputBucket, Prefix: &prefix, Delimiter: aws.String("/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if isCode(err, "NoSuchKey") {
			break // the embedded server: the "directory" does not exist
		}
		if err != nil {
			return nil, fmt.Errorf("list outputs of %s: %w", job.Printable(rec.Key), err)
		}
		for _, o := range page.Contents {
			if _, ok := job.OutputRel(rec.Key, aws.ToString(o.Key)); ok {
				found[aws.ToString(o.Key)] = aws.ToString(o.ETag)
			}
		}
	}
	return found, nil
}

// publish writes files as the outputs of rec, fenced as described at the
// top of this file.
func (w *Worker) publish(ctx context.Context, rec *job.Record, l *lease, files []outputFile, logf io.Writer) ([]job.Output, error) {
	// The lease proves the hold: renewed less than two thirds of a lease
	// ago, so nobody may claim the job for a third of a lease yet. (A
	// compare-and-swap here would cost a record read and write per job for
	// nothing more: the outcome write is one, with the claim token.)
	if err := l.held(); err != nil {
		return nil, err
	}
	existing, err := w.outputs(ctx, rec)
	if err != nil {
		return nil, err
	}
	if err := w.checkCurrent(ctx, rec); err != nil {
		return nil, err
	}
	written := map[string]string{} // output key -> the ETag we wrote
	var outs []job.Output
	for _, f := range files {
		key, err := job.OutputKey(rec.Key, f.rel)
		if err != nil {
			return nil, w.rollback(rec, written, err)
		}
		if err := l.held(); err != nil {
			return nil, w.rollback(rec, written, err)
		}
		o, etag, err := w.putOutput(ctx, rec, key, f, existing[key])
		for try := 1; isPrecondition(err) && try < publishTries; try++ {
			// Someone wrote this output since the listing. If our version
			// is no longer current, it was the newer version: stand back.
			if cerr := w.checkCurrent(ctx, rec); cerr != nil {
				return nil, w.rollback(rec, written, cerr)
			}
			// Still current: an older version's attempt that checked
			// before ours was uploaded. Replace what it wrote.
			head, herr := w.objects().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &w.cfg.OutputBucket, Key: &key})
			cur := ""
			if herr == nil {
				cur = aws.ToString(head.ETag)
			} else if !isCode(herr, "NotFound", "NoSuchKey") {
				return nil, w.rollback(rec, written, herr)
			}
			o, etag, err = w.putOutput(ctx, rec, key, f, cur)
		}
		if err != nil {
			return nil, w.rollback(rec, written, err)
		}
		written[key] = etag
		outs = append(outs, o)
		fmt.Fprintf(logf, "=== conveyor: uploaded s3://%s/%s (%d bytes)\n", w.cfg.OutputBucket, job.Printable(o.Key), o.Size)
	}
	// Still the current version and still ours once everything is written?
	// If not, a newer version may have cleaned up before our last write:
	// take back what we wrote, so nothing older stays. (With nothing
	// written, the check before stands.)
	if err := l.held(); err != nil {
		return nil, w.rollback(rec, written, err)
	}
	if len(written) > 0 {
		if err := w.checkCurrent(ctx, rec); err != nil {
			return nil, w.rollback(rec, written, err)
		}
	}
	// The listing taken before the check is good for the deletes: an object
	// written since by a newer version has another ETag and is kept, and an
	// older version's late write is taken back by its own attempt, which
	// finds itself no longer current.
	if err := w.deleteStale(ctx, existing, written); err != nil {
		fmt.Fprintf(logf, "=== conveyor: remove outputs of older versions: %v\n", err)
	}
	return outs, nil
}

// putOutput uploads one output with a condition on what is there now:
// If-Match etag, or If-None-Match * when etag is empty.
func (w *Worker) putOutput(ctx context.Context, rec *job.Record, key string, file outputFile, etag string) (job.Output, string, error) {
	f, size, err := openOutput(file.path)
	if err != nil {
		return job.Output{}, "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return job.Output{}, "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return job.Output{}, "", err
	}
	o := job.Output{Key: key, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	if w.beforePut != nil {
		w.beforePut(key)
	}
	in := &s3.PutObjectInput{
		Bucket:        &w.cfg.OutputBucket,
		Key:           &o.Key,
		ContentLength: aws.Int64(size),
		Metadata:      map[string]string{job.MetaJob: rec.ID, job.MetaInputVersion: rec.InputVersion(), job.MetaSHA256: o.SHA256},
	}
	if etag != "" {
		in.IfMatch = aws.String(etag)
	} else {
		in.IfNoneMatch = aws.String("*")
	}
	ctx, wd, done := newWatchdog(ctx, w.cfg.StallTimeout)
	defer done()
	in.Body = fileBody{f: f, wd: wd}
	// The uploader reads an *os.File's parts in place instead of buffering
	// them, so memory stays flat for any size. It does not carry the
	// condition to CompleteMultipartUpload itself: conditional does.
	up := manager.NewUploader(conditional{Client: w.s3, put: w.objects(), ifMatch: in.IfMatch, ifNoneMatch: in.IfNoneMatch}, func(u *manager.Uploader) {
		u.PartSize = w.cfg.PartSize
		u.Concurrency = w.cfg.UploadConcurrency
	})
	out, err := up.Upload(ctx, in)
	if err != nil {
		if isCode(err, "ObjectParentIsFile", "ExistingObjectIsDirectory") {
			return o, "", fmt.Errorf("%w: s3://%s/%s conflicts with another output on the embedded server, which keeps keys as file paths (an object cannot also be a folder); give the input or the output another name",
				errStoreConflict, w.cfg.OutputBucket, job.Printable(o.Key))
		}
		return o, "", fmt.Errorf("put s3://%s/%s: %w", w.cfg.OutputBucket, job.Printable(o.Key), transferErr(ctx, err))
	}
	return o, aws.ToString(out.ETag), nil
}

// conditional passes the upload's condition on to CompleteMultipartUpload,
// where a multipart upload replaces the object, and sends a single-part
// upload through put (the worker's Objects).
type conditional struct {
	*s3.Client
	put                  Objects
	ifMatch, ifNoneMatch *string
}

func (c conditional) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	return c.put.PutObject(ctx, in, opts...)
}

func (c conditional) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	in.IfMatch, in.IfNoneMatch = c.ifMatch, c.ifNoneMatch
	return c.Client.CompleteMultipartUpload(ctx, in, opts...)
}

// clearStale removes the outputs of rec's key if rec's version is
// current: for a job that ended without publishing (dead), so that no
// older version's outputs stay. List, check, then delete each on the ETag
// listed, so an output a newer version wrote meanwhile is never removed.
func (w *Worker) clearStale(ctx context.Context, rec *job.Record) error {
	found, err := w.outputs(ctx, rec)
	if err != nil || len(found) == 0 {
		return err
	}
	if err := w.checkCurrent(ctx, rec); err != nil {
		return nil // a newer version owns the key's outputs now
	}
	return w.deleteStale(ctx, found, nil)
}

// deleteStale deletes the listed outputs (key -> ETag) not in keep, each
// only if it still has the ETag listed.
func (w *Worker) deleteStale(ctx context.Context, listed, keep map[string]string) error {
	var errs []error
	for k, etag := range listed {
		if _, ok := keep[k]; ok {
			continue
		}
		_, err := w.objects().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &w.cfg.OutputBucket, Key: aws.String(k), IfMatch: aws.String(etag)})
		if err != nil && !isPrecondition(err) && !isCode(err, "NotFound", "NoSuchKey") {
			errs = append(errs, fmt.Errorf("delete s3://%s/%s: %w", w.cfg.OutputBucket, job.Printable(k), err))
		}
	}
	return errors.Join(errs...)
}

// rollback deletes what this attempt wrote, where it is still what it
// wrote, and returns cause.
func (w *Worker) rollback(rec *job.Record, written map[string]string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), handBackTimeout)
	defer cancel()
	for k, etag := range written {
		_, err := w.objects().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &w.cfg.OutputBucket, Key: aws.String(k), IfMatch: aws.String(etag)})
		if err != nil && !isPrecondition(err) && !isCode(err, "NotFound", "NoSuchKey") {
			w.logf("job %s: take back s3://%s/%s: %v", rec.ID, w.cfg.OutputBucket, job.Printable(k), err)
		}
	}
	return cause
}

func isPrecondition(err error) bool {
	return isCode(err, "PreconditionFailed", "ConditionalRequestConflict")
}

func isCode(err error, codes ...string) bool {
	var ae smithy.APIError
	if err == nil || !errors.As(err, &ae) {
		return false
	}
	for _, c := range codes {
		if ae.ErrorCode() == c {
			return true
		}
	}
	return false
}
