package worker

import (
	"context"
	"io"
	"os"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

// LogSink receives each attempt's part of a job's log when the attempt
// ends: CloudWatch Logs on AWS (internal/cwlogs).
type LogSink interface {
	// PutAttemptLog stores log, the part of job id's log that attempt
	// wrote. The worker logs an error; the attempt's outcome stands.
	PutAttemptLog(ctx context.Context, id string, attempt int, log io.Reader) error
}

// sinkLog hands the attempt's part of the log to Worker.LogSink, if set.
func (w *Worker) sinkLog(ctx context.Context, rec *job.Record, path string, from int64) {
	if w.LogSink == nil || path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		w.logf("job %s: send the attempt's log: %v", rec.ID, err)
		return
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		w.logf("job %s: send the attempt's log: %v", rec.ID, err)
		return
	}
	if err := w.LogSink.PutAttemptLog(ctx, rec.ID, rec.Attempt, f); err != nil {
		w.logf("job %s: send attempt %d's log: %v", rec.ID, rec.Attempt, err)
	}
}

// uploadLog copies the job's log from the volume to
// s3://<Config.LogBucket>/logs/<id>.log, when LogBucket is set: the whole
// log, every attempt so far, replacing the last copy. It runs when an
// attempt ended, before its outcome is recorded, so whoever sees the
// outcome finds the log complete. It is best effort: a failure is logged
// and the outcome stands.
func (w *Worker) uploadLog(ctx context.Context, rec *job.Record, path string) {
	if w.cfg.LogBucket == "" || path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		w.logf("job %s: upload log: %v", rec.ID, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		w.logf("job %s: upload log: %v", rec.ID, err)
		return
	}
	_, err = w.objects().PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(w.cfg.LogBucket),
		Key:           aws.String(jobstore.LogKey(rec.ID)),
		Body:          f,
		ContentLength: aws.Int64(fi.Size()),
		ContentType:   aws.String("text/plain; charset=utf-8"),
		Metadata:      map[string]string{"conveyor-job": rec.ID, "conveyor-attempt": strconv.Itoa(rec.Attempt)},
	})
	if err != nil {
		w.logf("job %s: upload log to s3://%s/%s: %v", rec.ID, w.cfg.LogBucket, jobstore.LogKey(rec.ID), err)
	}
}
