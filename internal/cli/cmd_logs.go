package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

type logsOptions struct {
	*globals
	follow bool
}

func newLogsCommand(g *globals) *cobra.Command {
	o := &logsOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "logs JOB",
		Short: "Print a job's log (processor output and Conveyor's notes)",
		Long: `Print the log of a job from the worker's volume: every attempt's header,
the processor's stdout and stderr, and the outcome. With -f, keep printing
as the log grows until the job finishes.

When the volume is on another machine (the EC2 worker), the log is read
from the state bucket, s3://<state>/logs/<job>.log, where the worker
uploads it as each attempt ends; -f then prints each attempt as it ends.`,
		Example: `  conveyor logs 3f2a9c
  conveyor logs samples/hello.txt -f`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runLogs(cmd.Context(), o, args[0]) },
	}
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "follow the log until the job finishes")
	return cmd
}

func runLogs(ctx context.Context, o *logsOptions, arg string) error {
	c, cn, rec, err := o.job(ctx, arg)
	if err != nil {
		return err
	}
	// The volume's own log when it is on this machine; otherwise the copy
	// a worker elsewhere uploads to the state bucket as each attempt ends.
	// Neither creates a volume here.
	path := filepath.Join(c.volumePath(), "logs", rec.ID+".log")
	key := jobstore.LogKey(rec.ID)
	poll := remoteLogPoll
	if cn.Files != "" {
		poll = 200 * time.Millisecond // conveyor up: the log appears here
	}
	var offset int64 // of the copy in the state bucket, printed so far
	for {
		f, err := os.Open(path)
		switch {
		case err == nil && offset == 0:
			defer f.Close()
			return followLocal(ctx, o, cn, rec, f)
		case err == nil:
			f.Close() // the copy is being printed already: keep to it
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
		n, found, err := copyFrom(ctx, cn, key, offset, o.Out)
		if err != nil {
			return err
		}
		offset += n
		if !o.follow {
			if !found {
				return fmt.Errorf("job %s (%s) has no log yet: not in %s, nor in s3://%s/%s (a worker on another machine uploads it when an attempt ends)", rec.ID, rec.State, path, cn.cfg.Buckets.State, key)
			}
			return nil
		}
		r, _, err := cn.Store.Get(ctx, rec.ID)
		if err == nil && r.State.Terminal() {
			// The worker uploads the log before it records the outcome.
			n, found2, err := copyFrom(ctx, cn, key, offset, o.Out)
			if err == nil && !found2 && offset+n == 0 {
				return fmt.Errorf("job %s ended %s with no log: it never ran on a worker, or its worker could not upload it", rec.ID, r.State)
			}
			return err
		}
		if err := sleepCtx(ctx, poll); err != nil {
			return nil
		}
	}
}

// remoteLogPoll is how often `logs -f` looks for a newer copy of a log in
// the state bucket (a copy changes once per attempt).
const remoteLogPoll = 2 * time.Second

// followLocal prints the log file f, and with -f what is appended to it
// until the job finishes.
func followLocal(ctx context.Context, o *logsOptions, cn *conn, rec *job.Record, f *os.File) error {
	for {
		if _, err := io.Copy(o.Out, f); err != nil {
			return err
		}
		if !o.follow {
			return nil
		}
		r, _, err := cn.Store.Get(ctx, rec.ID)
		if err == nil && r.State.Terminal() {
			_, err = io.Copy(o.Out, f)
			return err
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil
		}
	}
}

// copyFrom writes the object key of the state bucket from offset on to w;
// found is false when there is no such object (or nothing past offset,
// when offset > 0: then found is true).
func copyFrom(ctx context.Context, cn *conn, key string, offset int64, w io.Writer) (n int64, found bool, err error) {
	in := &s3.GetObjectInput{Bucket: &cn.cfg.Buckets.State, Key: &key}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := cn.S3.GetObject(ctx, in)
	var ae smithy.APIError
	switch {
	case errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange":
		return 0, true, nil // nothing new
	case jobstore.IsNotFound(err):
		return 0, offset > 0, nil
	case err != nil:
		return 0, false, fmt.Errorf("read s3://%s/%s: %w", cn.cfg.Buckets.State, key, err)
	}
	defer out.Body.Close()
	n, err = io.Copy(w, out.Body)
	return n, true, err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
