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
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/processor"
)

// errInputChanged means the object the job was created for is gone or was
// overwritten: its new content has its own job, so retrying cannot help.
var errInputChanged = errors.New("input object changed or was deleted since the job was created")

type attemptResult struct {
	workDir string
	log     string
	size    int64 // -1 when the input was not fetched
	sha256  string
	outputs []job.Output
	timings job.Timings
}

// attempt runs one attempt of a claimed job on the volume.
func (w *Worker) attempt(ctx context.Context, rec *job.Record) (res attemptResult, err error) {
	start := time.Now()
	res.size = -1
	res.workDir, _ = w.vol.WorkDir(rec.ID)
	res.log, _ = w.vol.LogPath(rec.ID)
	defer func() { res.timings.TotalMS = time.Since(start).Milliseconds() }()

	logf, err := os.OpenFile(res.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return res, fmt.Errorf("open job log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== conveyor: job %s attempt %d/%d on %s at %s\n", rec.ID, rec.Attempt, rec.MaxAttempts, rec.Owner, time.Now().UTC().Format(time.RFC3339))
	defer func() {
		if err != nil {
			fmt.Fprintf(logf, "=== conveyor: attempt %d failed: %v\n", rec.Attempt, err)
		} else {
			fmt.Fprintf(logf, "=== conveyor: attempt %d succeeded: %d output(s)\n", rec.Attempt, len(res.outputs))
		}
	}()

	// A previous attempt's leftovers would mix into this attempt's outputs.
	if err := os.RemoveAll(res.workDir); err != nil {
		return res, fmt.Errorf("clear work dir: %w", err)
	}
	env := processor.Env{
		JobID:       rec.ID,
		InputBucket: rec.Bucket,
		InputKey:    rec.Key,
		Input:       filepath.Join(res.workDir, "input", "input"+safeExt(rec.Key)),
		OutputDir:   filepath.Join(res.workDir, "output"),
		WorkDir:     filepath.Join(res.workDir, "scratch"),
	}
	for _, d := range []string{filepath.Dir(env.Input), env.OutputDir, env.WorkDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return res, fmt.Errorf("prepare work dir: %w", err)
		}
	}
	if err := w.vol.CheckSpace(rec.Size * 2); err != nil {
		return res, err
	}

	t := time.Now()
	res.size, res.sha256, err = w.fetch(ctx, rec, env.Input)
	res.timings.FetchMS = time.Since(t).Milliseconds()
	if err != nil {
		return res, err
	}
	fmt.Fprintf(logf, "=== conveyor: fetched s3://%s/%s (%d bytes, sha256 %s)\n", rec.Bucket, printable(rec.Key), res.size, res.sha256)

	t = time.Now()
	err = w.proc.Run(ctx, env, logf)
	res.timings.ProcessMS = time.Since(t).Milliseconds()
	if err != nil {
		return res, fmt.Errorf("processor %s: %w", w.proc.Name(), err)
	}

	t = time.Now()
	res.outputs, err = w.upload(ctx, rec, env.OutputDir, logf)
	res.timings.UploadMS = time.Since(t).Milliseconds()
	return res, err
}

// fetch streams the input object to path, hashing it on the way. It asks
// for the exact version the job was created for.
func (w *Worker) fetch(ctx context.Context, rec *job.Record, path string) (int64, string, error) {
	in := &s3.GetObjectInput{Bucket: &rec.Bucket, Key: &rec.Key}
	if rec.VersionID != "" && rec.VersionID != "null" {
		in.VersionId = &rec.VersionID
	} else if rec.ETag != "" {
		in.IfMatch = aws.String(`"` + rec.ETag + `"`)
	}
	out, err := w.s3.GetObject(ctx, in)
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			switch ae.ErrorCode() {
			case "PreconditionFailed", "NoSuchKey", "NoSuchVersion":
				return 0, "", fmt.Errorf("%w (%s)", errInputChanged, ae.ErrorCode())
			}
		}
		return 0, "", fmt.Errorf("fetch input: %w", err)
	}
	defer out.Body.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, "", fmt.Errorf("write input to volume: %w", err)
	}
	h := sha256.New()
	n, err := copyCtx(ctx, io.MultiWriter(f, h), out.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, "", fmt.Errorf("fetch input: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// upload sends every regular file under dir to the output bucket. Symbolic
// links are not followed: a processor must not be able to publish files
// from outside its output directory.
func (w *Worker) upload(ctx context.Context, rec *job.Record, dir string, logf io.Writer) ([]job.Output, error) {
	up := manager.NewUploader(w.s3, func(u *manager.Uploader) {
		u.PartSize = w.cfg.PartSize
		u.Concurrency = w.cfg.UploadConcurrency
	})
	var outs []job.Output
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		if !d.Type().IsRegular() {
			fmt.Fprintf(logf, "=== conveyor: skipped %q: not a regular file\n", rel)
			return nil
		}
		o, err := w.uploadFile(ctx, up, rec, path, filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		fmt.Fprintf(logf, "=== conveyor: uploaded s3://%s/%s (%d bytes)\n", w.cfg.OutputBucket, o.Key, o.Size)
		outs = append(outs, o)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("upload outputs: %w", err)
	}
	return outs, nil
}

func (w *Worker) uploadFile(ctx context.Context, up *manager.Uploader, rec *job.Record, path, rel string) (job.Output, error) {
	f, err := os.Open(path)
	if err != nil {
		return job.Output{}, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := copyCtx(ctx, h, f)
	if err != nil {
		return job.Output{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return job.Output{}, err
	}
	o := job.Output{Key: OutputKey(rec, rel), Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	// An *os.File is a ReaderAt and Seeker: the uploader reads parts in
	// place instead of buffering them, so memory stays flat for any size.
	_, err = up.Upload(ctx, &s3.PutObjectInput{
		Bucket:        &w.cfg.OutputBucket,
		Key:           &o.Key,
		Body:          f,
		ContentLength: aws.Int64(size),
		Metadata:      map[string]string{"conveyor-job": rec.ID, "sha256": o.SHA256},
	})
	if err != nil {
		return o, fmt.Errorf("put s3://%s/%s: %w", w.cfg.OutputBucket, o.Key, err)
	}
	return o, nil
}

// printable quotes a key with control characters for the log.
func printable(k string) string {
	if q := strconv.Quote(k); q[1:len(q)-1] != k {
		return q
	}
	return k
}
